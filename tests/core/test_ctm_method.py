"""CTM student, gamma-sampler, Lightning module and 2-D bench trainer."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from onestep.core.bench.traj_common import ring_teacher
from onestep.core.bench.traj_ctm import train_ctm
from onestep.core.data.noise import NoiseDataModule
from onestep.core.methods.builders import GMMData
from onestep.core.methods.ctm import (
    ConsistencyTrajectory,
    TrajectoryStudent,
    ctm_generate,
    ctm_student_module,
)
from onestep.core.metrics import energy_distance
from onestep.core.noise import flow
from onestep.core.objectives.ctm import ctm_jump
from onestep.core.testing import TwoTimeMLP, quiet_trainer, snapshot_params, tiny_denoiser

warnings.filterwarnings("ignore", ".*does not have many workers.*")


class Counting(nn.Module):
    """Counts the calls of the wrapped two-time net."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x, t, s):
        self.calls += 1
        return self.net(x, t, s)


def _student(prediction: str = "flow") -> TrajectoryStudent:
    return TrajectoryStudent(Counting(TwoTimeMLP(2, 16)), flow(), prediction)


@pytest.mark.parametrize("prediction", ["x0", "flow", "v"])
def test_student_boundary_is_exact(prediction: str):
    student = _student(prediction)
    x, t = torch.randn(6, 2), torch.tensor([1.0, 0.9, 0.5, 0.1, 0.01, 0.3])
    assert torch.equal(student(x, t, t), x)


def test_student_is_the_jump_of_its_g():
    student = _student("flow")
    x, t = torch.randn(4, 2), torch.tensor([1.0, 0.8, 0.5, 0.3])
    s = t / 3
    g = x - t[:, None] * student.net(x, t, s)  # flow prediction: x0 = x_t - t u
    torch.testing.assert_close(student(x, t, s), ctm_jump(flow(), x, g, t, s))


def test_generate_uses_one_evaluation_per_jump_and_composes_jumps():
    student = _student()
    eps = torch.randn(8, 2)
    one = ctm_generate(student, eps, [1.0, 0.0])
    assert student.net.calls == 1  # pyright: ignore[reportAttributeAccessIssue]
    torch.testing.assert_close(one, student(eps, torch.ones(8), torch.zeros(8)))
    counter = student.net
    assert isinstance(counter, Counting)
    counter.calls = 0
    two = ctm_generate(student, eps, [1.0, 0.4, 0.0])
    assert counter.calls == 2
    mid = student(eps, torch.ones(8), torch.full((8,), 0.4))
    torch.testing.assert_close(two, student(mid, torch.full((8,), 0.4), torch.zeros(8)))


def test_gamma_one_is_consistency_multistep_sampling():
    """gamma = 1: jump to 0, then re-noise to the next time: x = (1 - s) x0 + s noise."""
    student = _student()
    eps = torch.randn(5, 2)
    out = ctm_generate(
        student, eps, [1.0, 0.5, 0.0], gamma=1.0, generator=torch.Generator().manual_seed(3)
    )
    noise = torch.randn(5, 2, generator=torch.Generator().manual_seed(3))
    x0 = student(eps, torch.ones(5), torch.zeros(5))
    x_half = 0.5 * x0 + 0.5 * noise
    torch.testing.assert_close(out, student(x_half, torch.full((5,), 0.5), torch.zeros(5)))


def test_generate_rejects_bad_grids():
    with pytest.raises(ValueError, match="decrease"):
        ctm_generate(_student(), torch.randn(2, 2), [0.0, 1.0])
    with pytest.raises(ValueError, match="gamma"):
        ctm_generate(_student(), torch.randn(2, 2), [1.0, 0.0], gamma=2.0)


def _module(**kwargs) -> ConsistencyTrajectory:
    teacher = tiny_denoiser(2, flow(), "flow", hidden=8)
    return ConsistencyTrajectory(
        ctm_student_module(hidden=16, prediction="flow"), teacher, **kwargs
    )


def test_loss_gradient_flows_through_x_est_only():
    """Outer jump to 0 uses stop-grad weights: compare with a frozen deep copy of the student."""
    torch.manual_seed(0)
    model = _module(dsm_weight=0.0)
    x_t, t = torch.randn(6, 2), torch.rand(6) * 0.9 + 0.1
    s, u = t * 0.3, t * 0.6
    torch.manual_seed(1)
    model.consistency_loss(x_t, t, s, u, None).sum().backward()
    got = [
        torch.zeros(()) if p.grad is None else p.grad.clone() for p in model.student.parameters()
    ]
    frozen = copy.deepcopy(model.student).requires_grad_(False)
    teacher: Any = model.teacher
    model.student.zero_grad()
    with torch.no_grad():
        from onestep.core.sampling.step import ode_solve

        x_u = ode_solve(teacher, x_t, t, u, 2, "euler")
        target_0 = frozen(model.target(x_u, u, s), s, torch.zeros(6))
    pred_0 = frozen(model.student(x_t, t, s), s, torch.zeros(6))
    ((pred_0 - target_0) ** 2).mean(dim=1).sum().backward()
    for a, p in zip(got, model.student.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)


def test_training_updates_student_and_target_only(tmp_path):
    model = _module(ema_decay=0.0)
    teacher_before = snapshot_params(model.teacher)
    student_before = snapshot_params(model.student)
    data = NoiseDataModule([2], batch_size=16, num_batches=2, real=GMMData())
    trainer = quiet_trainer(default_root_dir=tmp_path)
    trainer.fit(model, data)
    for k, v in snapshot_params(model.teacher).items():
        assert torch.equal(v, teacher_before[k]), k
    assert any(
        not torch.equal(v, student_before[k]) for k, v in snapshot_params(model.student).items()
    )
    # ema_decay = 0: the target is a copy of the student after each step.
    for a, b in zip(model.target.parameters(), model.student.parameters(), strict=True):
        assert torch.equal(a, b)
    ckpt = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(ckpt)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    assert any(k.startswith("target.") for k in ckpt["state_dict"])
    assert model.export_student(tmp_path / "ctm.safetensors").exists()


def test_module_rejects_plain_students_and_bad_times():
    teacher = tiny_denoiser(2, flow(), hidden=8)
    with pytest.raises(TypeError, match="TrajectoryStudent"):
        ConsistencyTrajectory(TwoTimeMLP(2, 8), teacher)
    with pytest.raises(ValueError, match="t_min"):
        _module(t_min=0.5, t_max=0.4)


def test_bench_trainer_runs_and_improves():
    """A short run: generate works at 1, 2, 4 NFE and clearly beats the identity map eps -> eps."""
    torch.set_num_threads(1)
    mixture, _ = ring_teacher()
    eps = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    true = mixture.sample(1000, torch.Generator().manual_seed(1))
    res = train_ctm("ctm", steps=150, seed=0)
    assert res.method == "ctm" and res.steps == 150
    with torch.no_grad():
        out = {nfe: res.generate(eps, nfe) for nfe in (1, 2, 4)}
    assert all(x.shape == (1000, 2) and torch.isfinite(x).all() for x in out.values())
    baseline = energy_distance(eps, true)  # about 0.24
    for nfe in (1, 2):
        assert energy_distance(out[nfe], true) < 0.75 * baseline, nfe


@pytest.mark.slow
def test_bench_default_beats_the_teachers_four_step_sampler():
    """The tuned default (about 30-60 s on one thread): 1 and 2 NFE below 4-step Euler, 8 modes."""
    from onestep.core.metrics import mode_coverage
    from onestep.core.sampling import sample

    torch.set_num_threads(1)
    mixture, teacher = ring_teacher()
    eps = torch.randn(4000, 2, generator=torch.Generator().manual_seed(1000))
    true = mixture.sample(4000, torch.Generator().manual_seed(2000))
    res = train_ctm("ctm", seed=0)
    with torch.no_grad():
        goal = energy_distance(sample(teacher, eps, 4, solver="euler"), true)
        for nfe in (1, 2):
            x = res.generate(eps, nfe)
            assert energy_distance(x, true) < goal, nfe
            assert mode_coverage(x, mixture).covered == 8, nfe
