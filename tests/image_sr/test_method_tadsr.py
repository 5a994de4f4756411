"""TAD-SR as a Lightning module: finite losses, a frozen teacher that no step changes and no
checkpoint holds, the generator's path through the teacher's input, the same start point, the
resolver, a PSNR gain on a synthetic SR problem, the teacher loader and the shipped tiny config."""

from __future__ import annotations

import copy
import itertools
import warnings
from importlib.resources import files
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torch.utils.data import DataLoader, Dataset

from onestep.core import objectives
from onestep.core.cli import run_lightning
from onestep.core.discriminators import DenoiserFeatureHead
from onestep.core.ema import ema_update_
from onestep.sr.data.degrade import bicubic_downsample
from onestep.sr.methods.tadsr import (
    DISC_TIMES,
    HFSD_TIMES,
    TADSR,
    resshift_flow_times,
)
from onestep.sr.models.loading import load_teacher_denoiser
from onestep.sr.models.student import OneStepStudent
from onestep.sr.models.teacher import SRTeacher, build_denoiser
from onestep.sr.models.unet import tiny_unet

warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")
warnings.filterwarnings("ignore", ".*LightningCLI's args parameter.*")

SCALE = 2
CONFIG = Path(str(files("onestep.sr") / "configs" / "tadsr" / "tiny.yaml"))


# -- a synthetic SR problem: random colour blocks, bicubic x2 LR -----------------------------------


def blocks(n: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hr [n, 3, size, size], lr)``: 4-px colour blocks, random offsets; bicubic blurs edges."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.rand(n, 3, size // 4 + 1, size // 4 + 1, generator=g)
    big = F.interpolate(grid, scale_factor=4, mode="nearest")
    ox, oy = torch.randint(0, 4, (2, n), generator=g)
    hr = torch.stack([big[i, :, oy[i] : oy[i] + size, ox[i] : ox[i] + size] for i in range(n)])
    return hr, bicubic_downsample(hr, SCALE)


class Pairs(Dataset):
    def __init__(self, n: int, seed: int):
        self.hr, self.lr = blocks(n, seed=seed)

    def __len__(self) -> int:
        return len(self.hr)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"hr": self.hr[i], "lr": self.lr[i], "name": f"block{i}"}


def train_loader(n: int = 256, batch_size: int = 16) -> DataLoader:
    return DataLoader(
        Pairs(n, seed=0),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )


def val_loader() -> DataLoader:
    return DataLoader(Pairs(32, seed=99), batch_size=32)


def trainer(max_steps: int, **kwargs: Any) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


@pytest.fixture(scope="module")
def sr_teacher() -> SRTeacher:
    """A tiny SR3-style teacher trained briefly on the blocks (24 dB at 4 steps; bicubic 18 dB)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        teacher = SRTeacher(net=tiny_unet(widths=(8, 16), groups=4), scale=SCALE)
        opt = torch.optim.AdamW(teacher.net.parameters(), lr=3e-3)
        hr, lr = blocks(256)
        for _ in range(150):
            idx = torch.randint(0, 256, (16,))
            z_hr, z_lr = teacher.encode_batch({"hr": hr[idx], "lr": lr[idx]})
            t = torch.rand(16)
            x_t = teacher.denoiser.process.add_noise(z_hr, torch.randn_like(z_hr), t)
            loss = objectives.dsm_loss(teacher.denoiser(x_t, t, z_lr), z_hr).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            ema_update_(teacher.ema_net, teacher.net, 0.9)
    return teacher


def method(sr_teacher: SRTeacher, **kwargs: Any) -> TADSR:
    # A private copy per test: the default head hooks the teacher it is given.
    teacher = copy.deepcopy(sr_teacher.ema_denoiser)
    kwargs = {"scale": SCALE, "teacher_steps": 2, "lr_student": 1e-3, "lr_disc": 1e-3, **kwargs}
    return TADSR(teacher, **kwargs)


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def batch_of(n: int = 4) -> dict[str, Any]:
    hr, lr = blocks(n, seed=5)
    return {"hr": hr, "lr": lr}


# -- training -----------------------------------------------------------------------------------


def test_fit_logs_finite_losses(sr_teacher):
    model = method(sr_teacher, mse_weight=1.0)
    fit = trainer(6)
    fit.fit(model, train_loader(n=16, batch_size=4))
    assert fit.global_step == 6 and model.iteration == 3  # two optimizer steps per batch
    logged = fit.callback_metrics
    keys = ("distill", "hfsd", "adv", "mse", "student", "discriminator")
    for key in [f"loss/{k}" for k in keys] + ["grad_norm/student", "grad_norm/discriminator"]:
        assert torch.isfinite(logged[key]), (key, logged.get(key))
    assert logged["grad_norm/student"] > 0 and logged["grad_norm/discriminator"] > 0


@pytest.mark.parametrize(
    "kwargs",
    [{"teacher_start": "noise"}, {"hfsd_reference": "hr", "teacher_solver": "heun"}],
)
def test_other_start_reference_and_solver_train(sr_teacher, kwargs):
    model = method(sr_teacher, **kwargs)
    fit = trainer(2)
    fit.fit(model, train_loader(n=4, batch_size=4))
    assert torch.isfinite(fit.callback_metrics["loss/hfsd"])
    assert torch.isfinite(fit.callback_metrics["loss/distill"])


def test_one_step_trains_student_and_discriminator_never_the_teacher(sr_teacher):
    model = method(sr_teacher)
    assert isinstance(model.discriminator, DenoiserFeatureHead)
    assert model.discriminator.channels == 16  # the mid block of widths (8, 16)
    teacher0, student0 = state(model.teacher), state(model.student)
    disc0 = state(model.discriminator)
    trainer(2).fit(model, train_loader(n=16, batch_size=4))
    assert same(state(model.teacher), teacher0)  # bit-identical
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert not model.teacher.training and model.student.training
    assert not same(state(model.student), student0)
    assert not same(state(model.discriminator), disc0)
    # The student is a copy, not the teacher itself.
    assert not any(p is q for p in model.student.parameters() for q in model.teacher.parameters())


def test_generator_loss_reaches_the_student_through_the_teacher_input(sr_teacher):
    model = method(sr_teacher)
    z_hr, z_lr = model.encode_batch(batch_of())
    t = torch.full((4,), 0.5)
    loss = model.adversarial_loss(model.student(z_lr), z_hr, z_lr, t, torch.randn_like(z_hr))
    loss.sum().backward()
    student_grads = [p.grad for p in model.student.parameters() if p.grad is not None]
    assert student_grads and sum(float(g.abs().sum()) for g in student_grads) > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_teacher_starts_where_the_student_does(sr_teacher):
    # teacher_start="lr": one teacher step from x_1 = z_L is the untrained student's own output.
    model = method(sr_teacher, teacher_steps=1)
    _, z_lr = model.encode_batch(batch_of())
    with torch.no_grad():
        assert_close(model.teacher_sample(z_lr), model.student(z_lr))
    noise_start = method(sr_teacher, teacher_steps=1, teacher_start="noise")
    noise_start.rng.reseed(0)
    with torch.no_grad():
        assert (noise_start.teacher_sample(z_lr) - model.student(z_lr)).abs().max() > 1e-4


def test_checkpoint_leaves_the_teacher_out_and_loads_strictly(sr_teacher, tmp_path):
    model = method(sr_teacher)
    fit = trainer(2)
    fit.fit(model, train_loader(n=16, batch_size=4))
    path = tmp_path / "tadsr.ckpt"
    fit.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)
    keys = saved["state_dict"].keys()
    assert not any(k.startswith("teacher.") for k in keys)
    assert any(k.startswith("student.") for k in keys)
    assert any(k.startswith("discriminator.") for k in keys)
    loaded = TADSR.load_from_checkpoint(path, teacher=copy.deepcopy(sr_teacher.ema_denoiser))
    assert same(state(loaded.student), state(model.student))
    assert loaded.iteration == model.iteration == 1


def test_without_gan_there_is_no_discriminator(sr_teacher):
    model = method(sr_teacher, adv_weight=0.0)
    assert model.discriminator is None
    fit = trainer(2)
    fit.fit(model, train_loader(n=16, batch_size=4))
    assert fit.global_step == 2 and model.iteration == 2  # one optimizer per batch
    assert "loss/adv" not in fit.callback_metrics


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"teacher_start": "lq"}, ValueError, "unknown teacher_start"),
        ({"hfsd_reference": "gt"}, ValueError, "unknown hfsd_reference"),
        ({"hfsd_times": (0.0, 0.1)}, ValueError, "hfsd_times"),
        ({"teacher_steps": 0}, ValueError, "teacher_steps"),
        ({"disc_layer": "net.unet.nowhere"}, ValueError, "not a submodule"),
    ],
)
def test_bad_arguments_raise_clear_errors(sr_teacher, kwargs, error, match):
    with pytest.raises(error, match=match):
        method(sr_teacher, **kwargs)


def test_teacher_without_a_process_is_refused():
    with pytest.raises(TypeError, match=r"no \.process"):
        TADSR(tiny_unet(widths=(8, 16), groups=4))


def test_default_times_are_resshifts_steps_as_flow_times():
    assert HFSD_TIMES == resshift_flow_times(range(3)) == (0.038, 0.192, 0.267)
    assert len(DISC_TIMES) == 14 and DISC_TIMES[:3] == HFSD_TIMES
    assert all(a < b for a, b in itertools.pairwise(DISC_TIMES))
    assert 0.9 < DISC_TIMES[-1] < 1.0


# -- the one-step resolver ----------------------------------------------------------------------


def test_resolver_output_shape_and_range(sr_teacher):
    resolver = method(sr_teacher).resolver()
    sr = resolver(torch.rand(3, 3, 8, 12))
    assert sr.shape == (3, 3, 16, 24)
    assert sr.min() >= 0 and sr.max() <= 1
    assert resolver.multiple == 1  # one downsampling at x2: any LR side works


def test_distillation_improves_a_fresh_students_psnr(sr_teacher):
    # The default student is the teacher's copy, already at its one-step PSNR on this easy
    # problem; a fresh network starts at bicubic (zero output layer) and must learn from TAD-SR.
    student = OneStepStudent(build_denoiser(tiny_unet(widths=(8, 16), groups=4, seed=3)))
    model = method(sr_teacher, student=student, lr_student=3e-3)
    fit = trainer(2 * 60, limit_val_batches=1)
    before = fit.validate(model, val_loader(), verbose=False)[0]
    fit.fit(model, train_loader())
    after = fit.validate(model, val_loader(), verbose=False)[0]
    assert before["val/psnr_student"] == pytest.approx(before["val/psnr_bicubic"], abs=1e-3)
    assert after["val/psnr_student"] > before["val/psnr_student"] + 2.0, (before, after)


# -- the teacher loader and the shipped config --------------------------------------------------


def test_load_teacher_reads_a_saved_teacher(sr_teacher, tmp_path):
    sr_teacher.save_teacher(str(tmp_path / "teacher"))
    teacher = load_teacher_denoiser(str(tmp_path / "teacher"))
    _, z_lr = sr_teacher.encode_batch(batch_of())
    t = torch.full((4,), 0.3)
    x_t = torch.randn_like(z_lr)
    with torch.no_grad():
        assert_close(teacher(x_t, t, z_lr), sr_teacher.ema_denoiser(x_t, t, z_lr))
    assert not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(FileNotFoundError, match="save_teacher"):
        load_teacher_denoiser(str(tmp_path / "missing"))


def test_tiny_config_parses_without_the_teacher_folder(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_lightning(["fit", "--config", str(CONFIG), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "runs/sr_teacher/tiny" in capsys.readouterr().out


def test_tiny_config_fits_with_a_saved_teacher(sr_teacher, tmp_path):
    sr_teacher.save_teacher(str(tmp_path / "teacher"))
    cli = run_lightning(
        [
            "fit",
            "--config",
            str(CONFIG),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--model.init_args.teacher.init_args.path",
            str(tmp_path / "teacher"),
        ]
    )
    assert isinstance(cli.model, TADSR)
    assert cli.trainer.global_step == 8 and cli.model.iteration == 4
    logged = cli.trainer.callback_metrics
    for key in ("loss/distill", "loss/hfsd", "loss/adv", "loss/discriminator", "val/psnr_student"):
        assert torch.isfinite(logged[key]), key
