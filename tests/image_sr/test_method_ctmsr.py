"""CTMSR as a Lightning module: finite losses, what one step may change, the curriculum and DTM
schedule at the documented steps, the deterministic one-step resolver, a PSNR gain on a synthetic
SR problem, and the shipped tiny config."""

from __future__ import annotations

import warnings
from importlib.resources import files
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch.testing import assert_close
from torch.utils.data import DataLoader, Dataset

from onestep.core.cli import run_lightning
from onestep.sr.data.degrade import bicubic_downsample
from onestep.sr.methods.ctmsr import CTMSR, CTMSRStudent
from onestep.sr.models.unet import tiny_unet

warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")
warnings.filterwarnings("ignore", ".*LightningCLI's args parameter.*")

SCALE = 2
CONFIG = Path(str(files("onestep.sr") / "configs" / "ctmsr" / "tiny.yaml"))


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


def method(**kwargs: Any) -> CTMSR:
    kwargs = {
        "scale": SCALE,
        "distance": "l2",
        "perceptual": "none",
        "ema_decay": 0.5,
        "lr": 1e-3,
        **kwargs,
    }
    return CTMSR(net=tiny_unet(widths=(8, 16), groups=4), **kwargs)


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- training -----------------------------------------------------------------------------------


def test_fit_logs_finite_losses_in_both_phases():
    model = method(ct_steps=2, dtm_refresh=1, perceptual="ssim-grad", total_steps=4)
    fit = trainer(4)
    fit.fit(model, train_loader(n=16, batch_size=4))
    assert fit.global_step == 4  # one optimizer step per batch: max_steps counts iterations
    logged = fit.callback_metrics
    for key in ("loss/ct", "loss/dtm", "loss/ssim-grad", "loss/student", "grad_norm/student"):
        assert torch.isfinite(logged[key]), (key, logged.get(key))
    assert logged["grad_norm/student"] > 0
    assert logged["health/dtm"] == 1.0


def test_perceptual_dtm_trains_from_the_first_step():
    model = method(ct_steps=0, perceptual="ssim-grad", dtm_distance="perceptual", dtm_time=0.5)
    fit = trainer(2)
    fit.fit(model, train_loader(n=8, batch_size=4))
    assert torch.isfinite(fit.callback_metrics["loss/dtm"])
    assert fit.callback_metrics["health/dtm"] == 1.0


def test_one_ct_step_trains_the_net_moves_the_ema_and_leaves_the_dtm_model():
    model = method(ct_steps=10)
    online0, ema0, dtm0 = state(model.student), state(model.ema), state(model.dtm_model)
    assert same(online0, ema0) and same(online0, dtm0)
    trainer(1).fit(model, train_loader(n=16))
    online1, ema1 = state(model.student), state(model.ema)
    assert not same(online1, online0)  # trained
    assert not same(ema1, ema0)  # averaged towards it ...
    assert not same(ema1, online1)  # ... but not onto it
    for k in ema1:  # EMA(0.5): exactly halfway
        assert_close(ema1[k], 0.5 * (ema0[k] + online1[k]))
    assert same(state(model.dtm_model), dtm0)  # CT phase: DTM snapshot untouched
    assert not any(
        p.requires_grad for p in [*model.ema.parameters(), *model.dtm_model.parameters()]
    )
    assert not model.ema.training and not model.dtm_model.training


class Recorder(Callback):
    """Per iteration: the student before the step, the DTM model and the schedule logs after."""

    def __init__(self) -> None:
        self.student_before: list[dict[str, torch.Tensor]] = []
        self.dtm_after: list[dict[str, torch.Tensor]] = []
        self.num_points: list[float] = []
        self.dtm: list[float] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int):
        self.student_before.append(state(pl_module.student))

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ):
        self.dtm_after.append(state(pl_module.dtm_model))
        self.num_points.append(float(trainer.callback_metrics["health/num_points"]))
        self.dtm.append(float(trainer.callback_metrics["health/dtm"]))


def test_curriculum_dtm_phase_and_refreshes_happen_at_the_documented_steps():
    # K = 8, s0 = 4 -> s1 = 2: K' = floor(8 / 3) = 2, so N = s + 1 is 5, 5, 4, 4, 3, 3, 3, 3.
    # ct_steps = 3, dtm_refresh = 2: DTM from iteration 3 on, snapshots at 3, 5 and 7.
    model = method(s0=4, s1=2, total_steps=8, ct_steps=3, dtm_refresh=2)
    dtm0 = state(model.dtm_model)
    rec = Recorder()
    trainer(8, callbacks=[rec]).fit(model, train_loader(n=128, batch_size=16))
    assert rec.num_points == [5, 5, 4, 4, 3, 3, 3, 3]
    assert rec.dtm == [0, 0, 0, 1, 1, 1, 1, 1]
    assert [model.num_points(k) for k in range(8)] == rec.num_points
    assert [model.dtm_due(k) for k in range(9)] == [0, 0, 0, 1, 0, 1, 0, 1, 0]
    expected = [dtm0, dtm0, dtm0]
    for k in range(3, 8):  # snapshot = the student at the start of the refreshing iteration
        expected.append(rec.student_before[k] if model.dtm_due(k) else expected[-1])
    for k in range(8):
        assert same(rec.dtm_after[k], expected[k]), k
    assert not same(expected[3], expected[5]) and not same(expected[5], expected[7])


def test_curriculum_length_is_the_trainers_max_steps_unless_given():
    model = method(s0=4, s1=3)
    with pytest.raises(ValueError, match="max_steps"):
        model.num_points(0)
    model.trainer = trainer(10)
    assert [model.num_points(k) for k in (0, 4, 5, 9)] == [5, 5, 4, 4]  # K' = 5
    assert method(s0=4, s1=3, total_steps=4).num_points(2) == 4  # K' = 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"distance": "l1"}, "unknown CT distance"),
        ({"dtm_distance": "lpips"}, "unknown dtm_distance"),
        ({"dtm_distance": "perceptual", "perceptual": "none"}, "needs a perceptual net"),
        ({"dtm_refresh": 0}, "dtm_refresh"),
        ({"dtm_time": 0.0}, "dtm_time"),
        ({"sigma_max": 0.0}, "sigma_min < sigma_max"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        method(**kwargs)


# -- the one-step resolver ----------------------------------------------------------------------


def test_resolver_is_deterministic_and_batch_independent():
    model = method()
    net: Any = model.ema.net
    with torch.no_grad():  # give the residual branch something to say
        torch.nn.init.normal_(net.unet.conv_out.weight, std=0.1)
    resolver = model.resolver()
    lr = torch.rand(3, 3, 8, 12)
    sr = resolver(lr)
    assert sr.shape == (3, 3, 16, 24)
    assert sr.min() >= 0 and sr.max() <= 1
    torch.manual_seed(123)  # the global RNG plays no part
    assert_close(resolver(lr), sr)
    assert_close(resolver(lr[1:2]), sr[1:2])  # same image, other batch: same result
    assert isinstance(resolver.student, CTMSRStudent) and resolver.student is model.ema
    with pytest.raises(ValueError, match="without cond"):
        model.ema(torch.zeros(1, 3, 16, 16), cond=torch.zeros(1))


def test_untrained_student_starts_at_bicubic():
    # lr_skip and the zero output layer: F = z_L, so f(x_1, 1) = z_L + c_skip(1) sigma_max eps.
    model = method()
    lr = torch.rand(2, 3, 8, 8)
    bicubic = F.interpolate(lr, scale_factor=SCALE, mode="bicubic").clamp(0, 1)
    assert (model.resolver()(lr) - bicubic).abs().max() < 0.02


def test_training_improves_psnr_on_synthetic_sr():
    model = method(ct_steps=75, dtm_refresh=25, total_steps=150, ema_decay=0.9, lr=3e-3)
    fit = trainer(150, limit_val_batches=1)
    before = fit.validate(model, val_loader(), verbose=False)[0]
    fit.fit(model, train_loader())
    after = fit.validate(model, val_loader(), verbose=False)[0]
    assert before["val/psnr_student"] == pytest.approx(before["val/psnr_bicubic"], abs=0.05)
    assert after["val/psnr_student"] > before["val/psnr_student"] + 2.0, (before, after)


# -- the shipped config -------------------------------------------------------------------------


def test_tiny_config_fits(tmp_path):
    cli = run_lightning(
        ["fit", "--config", str(CONFIG), "--trainer.default_root_dir", str(tmp_path)]
    )
    assert isinstance(cli.model, CTMSR)
    assert cli.trainer.global_step == 8
    logged = cli.trainer.callback_metrics
    for key in ("loss/ct", "loss/dtm", "loss/student", "val/psnr_student", "val/psnr_bicubic"):
        assert torch.isfinite(logged[key]), key
    assert logged["health/dtm"] == 1.0 and logged["health/num_points"] == 4
