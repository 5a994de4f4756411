"""RectifiedFlow: teacher-ODE pairs, RF++ options wired, a frozen teacher, reflow straightens."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from onestep.core import noise
from onestep.core.methods.rectified_flow import RectifiedFlow, euler_sample, velocity
from onestep.core.methods.rf_pairs import PairsDataModule, teacher_pairs
from onestep.core.metrics import energy_distance
from onestep.core.objectives.flow_matching import flow_matching_loss, straight_interpolation
from onestep.core.sampling import sample
from onestep.core.testing import (
    assert_params_changed,
    assert_params_unchanged,
    gmm_teacher,
    snapshot_params,
    tiny_denoiser,
)


def _student(hidden: int = 32, prediction: str = "flow"):
    return tiny_denoiser(2, noise.flow(), prediction, hidden)


class _Counting(torch.nn.Module):
    """A teacher wrapper that counts its calls (to prove the cache is used)."""

    def __init__(self, teacher):
        super().__init__()
        self.teacher, self.process, self.calls = teacher, teacher.process, 0

    def forward(self, x_t, t, cond=None):
        self.calls += 1
        return self.teacher(x_t, t, cond)


def test_reflow_pairs_come_from_the_teacher_ode():
    _, teacher = gmm_teacher()
    z, x0 = teacher_pairs(teacher, [2], 300, steps=6, solver="heun", seed=3, chunk=128)
    z_again = torch.randn(300, 2, generator=torch.Generator().manual_seed(3))
    assert_close(z, z_again)
    assert_close(x0, sample(teacher, z_again, 6, solver="heun"))


def test_pairs_datamodule_caches_to_a_file(tmp_path):
    _, teacher = gmm_teacher()
    counting = _Counting(teacher)
    path = str(tmp_path / "pairs.safetensors")
    first = PairsDataModule(counting, [2], num_pairs=64, batch_size=16, steps=4, cache_path=path)
    first.setup()
    assert counting.calls > 0
    counting.calls = 0
    second = PairsDataModule(counting, [2], num_pairs=64, batch_size=16, steps=4, cache_path=path)
    second.setup()
    assert counting.calls == 0
    assert first.dataset is not None and second.dataset is not None
    assert_close(second.dataset.x0, first.dataset.x0)
    batch = next(iter(second.train_dataloader()))
    assert batch["z"].shape == (16, 2) and batch["x0"].shape == (16, 2)
    wrong = PairsDataModule(counting, [2], num_pairs=32, steps=4, cache_path=path)
    with pytest.raises(ValueError, match="cached pairs"):
        wrong.setup()


def test_velocity_of_a_flow_student_is_its_raw_output_and_matches_x0_form():
    student = _student()
    x, t = torch.randn(8, 2), torch.rand(8) * 0.8 + 0.1
    v = velocity(student, x, t)
    assert_close(v, student.net(x, t))
    # the x0 it implies: x_t - t v (rectified flow)
    assert_close(student(x, t), x - t[:, None] * v)


def test_u_shaped_times_and_pseudo_huber_are_wired():
    student = _student()
    module = RectifiedFlow(
        student,
        mode="reflow",
        metric="pseudo_huber",
        huber_c=0.05,
        time_sampler="u_shaped",
        u_shape_a=3.0,
    )
    # Times come from the module's per-step RNG (seed 0: step k seeds the generator with k).
    module.rng.reseed(7)
    t = module.sample_t(1000, torch.device("cpu"))
    assert_close(t, noise.u_shaped(1000, a=3.0, generator=torch.Generator().manual_seed(7)))
    z, x0 = torch.randn(16, 2), torch.randn(16, 2)
    module.rng.reseed(8)
    got = module.flow_loss(z, x0, None)
    t = noise.u_shaped(16, a=3.0, generator=torch.Generator().manual_seed(8))
    v = student.net(straight_interpolation(x0, z, t), t)
    assert_close(got, flow_matching_loss(v, x0, z, metric="pseudo_huber", c=0.05))


def test_distill_loss_is_the_one_step_sample_error():
    student = _student()
    module = RectifiedFlow(student, mode="distill")
    z, x0 = torch.randn(16, 2), torch.randn(16, 2)
    one_step = z - student.net(z, torch.ones(16))  # InstaFlow's G(z) = z - v(z, 1)
    assert_close(module.distill_loss(z, x0, None), ((one_step - x0) ** 2).mean(dim=1))
    assert_close(module.sample(z, 1, ema=False), one_step)


def test_rejects_a_non_flow_student_and_unknown_options():
    with pytest.raises(TypeError, match="rectified-flow process"):
        RectifiedFlow(tiny_denoiser(2, noise.vp(), "eps"))
    with pytest.raises(ValueError, match="unknown mode"):
        RectifiedFlow(_student(), mode="consistency")
    with pytest.raises(ValueError, match="unknown time_sampler"):
        RectifiedFlow(_student(), time_sampler="beta")
    module = RectifiedFlow(_student(), mode="reflow")
    with pytest.raises(ValueError, match="no teacher"):
        module.pairs({"z": torch.randn(4, 2)})


def test_teacher_frozen_out_of_checkpoints_and_on_the_fly_pairs():
    _, teacher = gmm_teacher()
    student = _student()
    module = RectifiedFlow(student, teacher, mode="distill", pair_steps=4, pair_solver="euler")
    z = torch.randn(8, 2)
    _, x0 = module.pairs({"z": z})
    assert_close(x0, sample(teacher, z, 4, solver="euler"))
    assert not any(p.requires_grad for p in module.teacher.parameters())  # pyright: ignore[reportOptionalMemberAccess]
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    assert any(k.startswith("student_ema.") for k in ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"], strict=True)


def test_a_step_moves_the_student_only_and_ema_follows():
    _, teacher = gmm_teacher()
    module = RectifiedFlow(_student(), teacher, mode="reflow", ema_decay=0.5)
    snaps = {n: snapshot_params(getattr(module, n)) for n in ("student", "student_ema", "teacher")}
    opt = module.configure_optimizers()
    z, x0 = torch.randn(32, 2), torch.randn(32, 2)
    loss = module.flow_loss(z, x0, None).mean()
    loss.backward()
    opt.step()
    module.on_train_batch_end(None, None, 0)
    assert_params_changed(module.student, snaps["student"])
    assert_params_changed(module.student_ema, snaps["student_ema"])
    assert_params_unchanged(module.teacher, snaps["teacher"])  # pyright: ignore[reportArgumentType]


def test_reflow_straightens_the_teacher():
    """A reflowed tiny model's 1-step Euler sample beats the teacher's 1- and 2-step ones.

    The exact teacher's one Euler step lands on ``E[x0 | x_1]`` (near the ring's centre); flow
    matching on its ODE couplings learns nearly straight paths (Liu et al. 2023, thm. 3.6), so one
    Euler step of the reflowed model already lands near the ring.
    """
    torch.manual_seed(0)
    mixture, teacher = gmm_teacher()
    z, x0 = teacher_pairs(teacher, [2], 4096, steps=16, solver="heun")
    module = RectifiedFlow(_student(64), mode="reflow", time_sampler="u_shaped")
    opt = torch.optim.Adam(module.student.parameters(), lr=3e-3)
    for _ in range(400):
        idx = torch.randint(0, 4096, (256,))
        loss = module.flow_loss(z[idx], x0[idx], None).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    g = torch.Generator().manual_seed(1)
    ref, eps = mixture.sample(1000, g), torch.randn(1000, 2, generator=g)
    with torch.no_grad():
        reflow_1 = energy_distance(euler_sample(module.student, eps, 1), ref)
        teacher_1 = energy_distance(sample(teacher, eps, 1), ref)
        teacher_2 = energy_distance(sample(teacher, eps, 2), ref)
        coupling = ((euler_sample(module.student, z[:1000], 1) - x0[:1000]) ** 2).sum(1).mean()
        teacher_coupling = ((sample(teacher, z[:1000], 1) - x0[:1000]) ** 2).sum(1).mean()
    assert reflow_1 < teacher_2 < teacher_1, (reflow_1, teacher_2, teacher_1)
    assert coupling < 0.25 * teacher_coupling, (coupling, teacher_coupling)


def test_flow_matching_without_data_raises():
    module = RectifiedFlow(_student(), mode="flow_matching")
    with pytest.raises(ValueError, match="NoiseDataModule"):
        module.pairs({"z": torch.randn(4, 2)})


def test_export_writes_the_ema_student(tmp_path):
    from safetensors.torch import load_file

    module = RectifiedFlow(_student(), mode="reflow")
    with torch.no_grad():
        for p in module.student_ema.parameters():
            p.add_(1.0)  # make EMA and student differ
    path = module.export_student(tmp_path / "out")
    state = load_file(str(path))
    for name, value in module.student_ema.state_dict().items():
        assert_close(state[name], value)
    assert not torch.equal(
        state["net.net.0.weight"], module.student.state_dict()["net.net.0.weight"]
    )


class _L1(torch.nn.Module):
    def forward(self, a, b):
        return (a - b).abs().flatten(1).mean(dim=1)


def test_perceptual_module_makes_the_lpips_huber_loss():
    from onestep.core.objectives.flow_matching import lpips_huber_loss

    student = _student()
    module = RectifiedFlow(student, mode="reflow", perceptual=_L1(), huber_c=0.1)
    z, x0 = torch.randn(16, 2), torch.randn(16, 2)
    module.rng.reseed(3)  # the module's per-step RNG (seed 0: step 3 seeds it with 3)
    got = module.flow_loss(z, x0, None)
    t = noise.uniform(16, generator=torch.Generator().manual_seed(3))
    v = student.net(straight_interpolation(x0, z, t), t)
    assert_close(got, lpips_huber_loss(v, x0, z, t, _L1(), 0.1))
    distill = RectifiedFlow(student, mode="distill", perceptual=_L1())
    one_step = z - student.net(z, torch.ones(16))
    expected = ((one_step - x0) ** 2).mean(1) + (one_step - x0).abs().mean(1)
    assert_close(distill.distill_loss(z, x0, None), expected)
