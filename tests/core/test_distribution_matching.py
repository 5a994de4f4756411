"""DistributionMatching: isolation, divergences, logging, checkpoints, export, convergence."""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from onestep.core.data.noise import NoiseDataModule, NoiseDataset
from onestep.core.denoiser import Guided
from onestep.core.discriminators import DenoiserFeatureHead, SmallDiscriminator
from onestep.core.methods import DIVERGENCES, DistributionMatching, MultiStudent
from onestep.core.methods.builders import (
    GMMData,
    gmm_teacher_module,
    multi_student_module,
    tiny_denoiser_module,
)
from onestep.core.methods.dm_generate import check_times, generate
from onestep.core.methods.dm_random import GlobalBatchRNG
from onestep.core.methods.dm_teacher import TeacherGuidance
from onestep.core.metrics import energy_distance, mode_coverage
from onestep.core.testing import (
    assert_params_changed,
    assert_params_unchanged,
    cpu_ddp_spawn,
    gmm_teacher,
    quiet_trainer,
    snapshot_params,
)

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")

LOG_KEYS = {
    "loss/student",
    "loss/fake_score",
    "grad_norm/student",
    "grad_norm/fake_score",
    "health/fake_fit",
    "health/dm_grad_norm",
}


def _trainer(steps: int, **kw) -> L.Trainer:
    # Lightning's global_step counts every optimizer step (fake_steps + 1 per iteration).
    return quiet_trainer(limit_train_batches=steps, max_epochs=1, **kw)


def _method(divergence: str = "dmd2", cond_dim: int = 0, **kw) -> DistributionMatching:
    disc = None
    if divergence.startswith("fdiv") or kw.get("gan_weight", 0) > 0:
        disc = SmallDiscriminator(2, hidden=16, time_conditioning=True)
    return DistributionMatching(
        student=tiny_denoiser_module(hidden=16, cond_dim=cond_dim, seed=1),
        teacher=gmm_teacher_module("ring", "flow"),
        fake_score=tiny_denoiser_module(hidden=16, cond_dim=cond_dim, prediction="flow", seed=2),
        divergence=divergence,
        discriminator=disc,
        fake_steps=2,
        lr_student=1e-3,
        lr_fake=1e-3,
        **kw,
    )


def _data(batch: int = 16, batches: int = 3, real: bool = False, classes: int = 0):
    return NoiseDataModule(
        [2], batch, batches, num_classes=classes, real=GMMData("ring") if real else None
    )


# -- the two updates touch only their own network --------------------------------------------------


class _OnlyStudent(DistributionMatching):
    def training_step(self, batch, batch_idx):
        self.rng.reseed(batch_idx)
        opts: Any = self.optimizers()
        self.student_step(opts[0], batch["z"], batch.get("cond"))


class _OnlyFake(DistributionMatching):
    def training_step(self, batch, batch_idx):
        self.rng.reseed(batch_idx)
        opts: Any = self.optimizers()
        self.fake_score_step(opts[1], batch["z"], batch.get("cond"), batch.get("x0"))


def _isolated(cls, divergence: str) -> DistributionMatching:
    # A teacher with weights (not the analytic one), so "teacher unchanged" can fail.
    teacher = tiny_denoiser_module(hidden=16, seed=3)
    disc = SmallDiscriminator(2, hidden=16) if DIVERGENCES[divergence].needs_ratio else None
    return cls(
        student=tiny_denoiser_module(hidden=16, seed=1),
        teacher=teacher,
        fake_score=tiny_denoiser_module(hidden=16, seed=2),
        divergence=divergence,
        discriminator=disc,
        lr_student=1e-2,
        lr_fake=1e-2,
    )


@pytest.mark.parametrize("divergence", ["dmd2", "vsd", "sid", "sim", "fdiv-js"])
def test_student_step_leaves_teacher_and_fake_score_bit_identical(divergence):
    m = _isolated(_OnlyStudent, divergence)
    snaps = [snapshot_params(n) for n in (m.student, m.teacher, m.fake_score)]
    _trainer(2).fit(m, _data(real=True))
    assert_params_changed(m.student, snaps[0])
    assert_params_unchanged(m.teacher, snaps[1])
    assert_params_unchanged(m.fake_score, snaps[2])
    assert all(p.requires_grad for p in m.fake_score.parameters())  # toggle was undone
    assert not any(p.requires_grad for p in m.teacher.parameters())


@pytest.mark.parametrize("divergence", ["dmd2", "fdiv-rkl"])
def test_fake_score_step_leaves_student_and_teacher_bit_identical(divergence):
    m = _isolated(_OnlyFake, divergence)
    snaps = [snapshot_params(n) for n in (m.student, m.teacher, m.fake_score)]
    disc = snapshot_params(m.discriminator) if m.discriminator is not None else None
    _trainer(2).fit(m, _data(real=True))
    assert_params_unchanged(m.student, snaps[0])
    assert_params_unchanged(m.teacher, snaps[1])
    assert_params_changed(m.fake_score, snaps[2])
    if disc is not None:
        assert_params_changed(m.discriminator, disc)  # pyright: ignore[reportArgumentType]


def test_teacher_is_frozen_and_stays_in_eval_mode():
    m = _method()
    m.train()
    assert not m.teacher.training and m.student.training and m.fake_score.training
    assert not any(p.requires_grad for p in m.teacher.parameters())


# -- every divergence runs and logs the health numbers ---------------------------------------------


@pytest.mark.parametrize("divergence", sorted(DIVERGENCES))
def test_every_divergence_trains_and_logs_finite_health(divergence):
    m = _method(divergence)
    trainer = _trainer(3)
    trainer.fit(m, _data(real=True))
    logged = trainer.callback_metrics
    assert LOG_KEYS <= set(logged), sorted(logged)
    for key in LOG_KEYS:
        assert torch.isfinite(logged[key]), (key, logged[key])
    assert m.iteration == 3


@pytest.mark.parametrize("head", ["small", "fake_score_features"])
def test_gan_term_logs_discriminator_and_generator_losses(head):
    m = _method("dmd2", gan_weight=0.1, r1_weight=0.1)
    if head == "fake_score_features":  # DMD2: a classifier head on the fake score's features
        m.discriminator = DenoiserFeatureHead(m.fake_score, "net.net.2", channels=16, hidden=8)
    snap = snapshot_params(m.discriminator)  # pyright: ignore[reportArgumentType]
    trainer = _trainer(2)
    trainer.fit(m, _data(real=True))
    assert {"loss/discriminator", "loss/gan_student"} <= set(trainer.callback_metrics)
    assert_params_changed(m.discriminator, snap)  # pyright: ignore[reportArgumentType]


def test_dm_grad_norm_is_the_norm_of_the_dmd_direction():
    m = _method("dmd2")
    m.rng.reseed(0)
    x = torch.randn(8, 2).requires_grad_(True)
    m.rng.reseed(5)
    m.student_loss(x, None).sum().backward()
    m.rng.reseed(5)
    t, x_t = m._noised(x.detach(), m.hparams["t_min"], m.hparams["t_max"])
    with torch.no_grad():
        real, fake = m.teacher(x_t, t), m.fake_score(x_t, t)
    norm = (x.detach() - real).abs().mean(1, keepdim=True) + 1e-6
    # dmd_loss's gradient: (x0_fake - x0_real) / mean|x - x0_real| / numel, per sample.
    assert_close(x.grad, (fake - real) / norm / 2)


def test_bad_configurations_fail_early_with_the_fix():
    with pytest.raises(ValueError, match=r"unknown divergence .kl.*dmd2"):
        _method("kl")
    with pytest.raises(ValueError, match="needs a discriminator"):
        DistributionMatching(
            tiny_denoiser_module(), gmm_teacher_module(), tiny_denoiser_module(), "fdiv-fkl"
        )
    with pytest.raises(ValueError, match="use divergence='dmd2'"):
        _method("vsd", decoupled=True, guidance_scale=2.0, uncond=-1)
    with pytest.raises(ValueError, match="uncond"):
        _method(guidance_scale=2.0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        check_times([0.5, 1.0])


# -- multi-step students, guidance -----------------------------------------------------------------


def test_backward_simulation_runs_earlier_steps_without_grad():
    student = tiny_denoiser_module(hidden=16, seed=1)
    z, eps = torch.randn(4, 2), torch.randn(4, 2)
    x = generate(student, student.process, z, [1.0, 0.5], 1, lambda shape: eps)
    with torch.no_grad():
        x0 = student(z, torch.ones(4))
    expected = student(
        student.process.add_noise(x0, eps, torch.full((4,), 0.5)), torch.full((4,), 0.5)
    )
    assert_close(x, expected)
    x.sum().backward()
    assert all(p.grad is not None for p in student.parameters())


def test_multistep_student_with_random_cfg_and_decoupled_terms_trains():
    for kw in (
        {"guidance_scale": 2.0},
        {"guidance_range": (1.0, 3.0)},
        {"guidance_range": (1.0, 3.0), "decoupled": True, "ca_t_min": 0.5},
    ):
        m = _method("dmd2", cond_dim=8, student_times=[1.0, 0.5], uncond=-1, **kw)
        trainer = _trainer(2)
        trainer.fit(m, _data(classes=8))
        assert torch.isfinite(trainer.callback_metrics["loss/student"]), kw


def test_fixed_guidance_matches_guided_wrapper_and_decoupled_split_adds_up():
    teacher = gmm_teacher_module("ring", "flow")
    x_t, t, cond = torch.randn(6, 2), torch.rand(6), torch.randint(8, (6,))
    w = torch.full((6,), 2.5)
    guidance = TeacherGuidance(scale=2.5, uncond=-1)
    expected = Guided(teacher, 2.5, torch.tensor([-1]))(x_t, t, cond)
    assert_close(guidance.x0(teacher, x_t, t, cond, w), expected)
    x0_c, x0_u = guidance.cond_and_uncond(teacher, x_t, t, cond)
    assert_close(x0_c + guidance.augmentation(x0_c, x0_u, w), expected)
    lo_hi = TeacherGuidance(scale_range=(1.0, 3.0), uncond=-1).weights(
        torch.tensor([0.0, 0.5, 1.0])
    )
    assert_close(lo_hi, torch.tensor([1.0, 2.0, 3.0]))


def test_multi_student_routes_each_label_to_its_owner_only():
    msd = multi_student_module(num_students=2, num_classes=8, hidden=16)
    assert msd.partition == [[0, 1, 2, 3], [4, 5, 6, 7]]
    x_t, t = torch.randn(6, 2), torch.rand(6)
    cond = torch.tensor([0, 5, 3, 7, 1, 4])
    out = msd(x_t, t, cond)
    for k, student in enumerate(msd.students):
        mine = msd.owner[cond] == k
        assert_close(out[mine], student(x_t[mine], t[mine], cond[mine]))
    out[cond < 4].sum().backward()  # only student 0's samples
    assert any(p.grad is not None and p.grad.any() for p in msd.students[0].parameters())
    assert all(p.grad is None or not p.grad.any() for p in msd.students[1].parameters())
    with pytest.raises(ValueError, match="disjoint"):
        MultiStudent([tiny_denoiser_module(), tiny_denoiser_module()], 4, [[0, 1], [1, 2, 3]])
    with pytest.raises(ValueError, match="long labels"):
        msd(x_t, t, None)


# -- randomness and data do not depend on the process count ----------------------------------------


def test_two_ranks_draw_the_global_batch_rows_of_one_process():
    one = GlobalBatchRNG(seed=3)
    ranks = [GlobalBatchRNG(seed=3, rank=r, world_size=2) for r in range(2)]
    for g in (one, *ranks):
        g.reseed(7)
    full = one.randn([8, 2])
    halves = [g.randn([4, 2]) for g in ranks]
    assert_close(full[0::2], halves[0])
    assert_close(full[1::2], halves[1])
    assert not torch.equal(halves[0], halves[1])


def test_noise_items_are_pure_functions_of_seed_and_index():
    a = NoiseDataset([2], 10, num_classes=4, real=GMMData(), seed=1)
    b = NoiseDataset([2], 10, num_classes=4, real=GMMData(), seed=1)
    assert_close(a[3]["z"], b[3]["z"])
    assert set(a[3]) == {"z", "cond", "x0"} and 0 <= int(a[3]["cond"]) < 4
    assert not torch.equal(a[3]["z"], a[4]["z"])
    with pytest.raises(ValueError, match="num_classes"):
        NoiseDataset([2], 10, num_classes=-1)


# -- checkpoints and export ------------------------------------------------------------------------


def test_checkpoint_has_no_teacher_and_reloads(tmp_path):
    m = _method()
    trainer = _trainer(2)
    trainer.fit(m, _data())
    path = tmp_path / "dm.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    assert any(k.startswith("student.") for k in ckpt["state_dict"])
    assert ckpt["dm_iteration"] == 2
    fresh = _method()
    loaded = DistributionMatching.load_from_checkpoint(
        path, student=fresh.student, teacher=fresh.teacher, fake_score=fresh.fake_score
    )
    assert_close(loaded.student.state_dict(), m.student.state_dict())
    assert loaded.iteration == 2


def test_training_resumes_from_a_teacher_less_checkpoint(tmp_path):
    first = _method()
    trainer = _trainer(2)
    trainer.fit(first, _data(batches=2))
    trainer.save_checkpoint(tmp_path / "dm.ckpt")
    resumed = _method()
    more = quiet_trainer(max_epochs=2)
    more.fit(resumed, _data(batches=2), ckpt_path=tmp_path / "dm.ckpt")
    assert resumed.iteration == 4  # 2 restored + 2 new iterations
    assert torch.isfinite(more.callback_metrics["loss/student"])


def test_export_student_safetensors_round_trip(tmp_path):
    m = _method()
    file = m.export_student(tmp_path / "out")
    assert file.name == "student.safetensors"
    fresh = tiny_denoiser_module(hidden=16, seed=9)
    fresh.load_state_dict(load_file(str(file)))
    z = torch.randn(5, 2)
    assert_close(fresh(z, torch.ones(5)), m.student(z, torch.ones(5)))


def _tiny_unet_denoiser(seed: int):
    from diffusers import DDPMScheduler, UNet2DModel

    from onestep.core.adapters import from_unet2d

    torch.manual_seed(seed)
    net = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 8),
        layers_per_block=1,
        norm_num_groups=2,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    return from_unet2d(net, scheduler=DDPMScheduler(num_train_timesteps=100))


def test_image_shaped_diffusers_student_trains_and_exports_a_pipeline(tmp_path):
    from diffusers import UNet2DModel

    m = DistributionMatching(
        _tiny_unet_denoiser(1), _tiny_unet_denoiser(2), _tiny_unet_denoiser(3), fake_steps=1
    )
    snap = snapshot_params(m.student)
    trainer = _trainer(2)
    trainer.fit(m, NoiseDataModule([3, 8, 8], batch_size=2, num_batches=2))
    assert_params_changed(m.student, snap)
    assert torch.isfinite(trainer.callback_metrics["health/dm_grad_norm"])
    out = m.export_student(tmp_path / "pipe")
    assert (out / "model_index.json").is_file()
    reloaded = UNet2DModel.from_pretrained(str(out / "unet"))
    student_net: Any = m.student.net
    assert_close(reloaded.state_dict(), student_net.state_dict())


# -- convergence on the analytic teacher -----------------------------------------------------------


def test_dmd2_one_step_student_converges_on_the_8_mode_ring():
    """A from-scratch one-step student approaches the exact ring teacher (budget ~15 s on CPU)."""
    gmm = gmm_teacher("ring")[0]
    m = DistributionMatching(
        student=tiny_denoiser_module(hidden=64, seed=1),
        teacher=gmm_teacher_module("ring", "flow"),
        fake_score=tiny_denoiser_module(hidden=64, prediction="flow", seed=2),
        fake_steps=2,
        lr_student=2e-3,
        lr_fake=3e-3,
        fake_weighting="flow",
        decay_steps=1500,
        health_every=0,
    )
    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(5))
    real = gmm.sample(2000, torch.Generator().manual_seed(6))

    def quality() -> tuple[float, int]:
        with torch.no_grad():
            x = m.student(z, torch.ones(2000))
        return energy_distance(x, real), mode_coverage(x, gmm, radius=0.5).covered

    before, _ = quality()
    _trainer(1500).fit(m, _data(batch=256, batches=1500))
    after, covered = quality()
    assert after < before / 20, (before, after)
    assert covered == 8


# -- two CPU processes (gloo) give the losses of one process at the same global batch -------------


NIT = 3


def _ddp_run(devices: int, sid: bool = False) -> tuple[DistributionMatching, dict]:
    m = _method("sid" if sid else "dmd2")
    strategy = cpu_ddp_spawn() if devices > 1 else "auto"
    trainer = quiet_trainer(devices=devices, strategy=strategy)
    # Global batch 16 for 3 iterations either way: 1 x 16 or 2 x 8 per process.
    trainer.fit(m, _data(batch=16 // devices, batches=NIT * devices))
    return m, {k: v.clone() for k, v in trainer.callback_metrics.items()}


@pytest.mark.slow
@pytest.mark.parametrize("sid", [False, True], ids=["dmd2", "sid"])
def test_two_process_ddp_matches_one_process(sid):
    single, single_logs = _ddp_run(1, sid)
    ddp, ddp_logs = _ddp_run(2, sid)
    for key in LOG_KEYS:
        assert_close(ddp_logs[key], single_logs[key], rtol=1e-4, atol=1e-5, msg=key)
    assert_close(ddp.student.state_dict(), single.student.state_dict(), rtol=1e-4, atol=1e-5)
    assert_close(ddp.fake_score.state_dict(), single.fake_score.state_dict(), rtol=1e-4, atol=1e-5)
