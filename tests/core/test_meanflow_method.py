"""MeanFlow average-velocity model, sampler, Lightning module and 2-D bench trainer."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from onestep.core.bench.traj_common import ring_goal_scores, ring_teacher
from onestep.core.bench.traj_meanflow import train_meanflow
from onestep.core.data.noise import NoiseDataModule
from onestep.core.methods.builders import GMMData, gmm_teacher_module
from onestep.core.methods.meanflow import (
    AverageVelocity,
    MeanFlow,
    meanflow_generate,
    meanflow_student_module,
)
from onestep.core.metrics import energy_distance
from onestep.core.testing import quiet_trainer, snapshot_params

warnings.filterwarnings("ignore", ".*does not have many workers.*")


class Recorder(nn.Module):
    """A two-time 'net' that records its inputs and returns ``z * (1 + t) + s``."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, z, t, s):
        self.calls.append((t, s))
        return z * (1 + t[:, None]) + s[:, None]


def test_average_velocity_feeds_t_and_t_minus_r():
    net = Recorder()
    u = AverageVelocity(net)
    z, r, t = torch.randn(3, 2), torch.tensor([0.1, 0.2, 0.0]), torch.tensor([0.5, 0.9, 1.0])
    torch.testing.assert_close(u(z, r, t), z * (1 + t[:, None]) + (t - r)[:, None])
    torch.testing.assert_close(net.calls[0][1], t - r)


def test_generate_one_step_and_nfe_count():
    net = Recorder()
    u = AverageVelocity(net)
    eps = torch.randn(4, 2)
    one = meanflow_generate(u, eps)
    torch.testing.assert_close(one, eps - u(eps, torch.zeros(4), torch.ones(4)))
    net.calls.clear()
    meanflow_generate(u, eps, [1.0, 0.75, 0.5, 0.0])
    assert len(net.calls) == 3
    with pytest.raises(ValueError, match="decrease"):
        meanflow_generate(u, eps, [1.0, 1.0])


def test_generate_is_exact_with_the_exact_average_velocity():
    """dz/dt = a z: any grid of exact average velocities lands on z_1 exp(-a)."""
    a = 0.7

    class Exact(nn.Module):
        def forward(self, z, r, t):
            dt = (t - r)[:, None]
            return z * (1 - torch.exp(-a * dt)) / dt

    eps = torch.randn(5, 3, dtype=torch.float64)
    expected = eps * torch.exp(torch.tensor(-a, dtype=torch.float64))
    for times in ([1.0, 0.0], [1.0, 0.3, 0.0], [1.0, 0.75, 0.5, 0.25, 0.0]):
        torch.testing.assert_close(meanflow_generate(Exact(), eps, times), expected)


def test_module_validates_arguments():
    student = meanflow_student_module(hidden=8)
    with pytest.raises(ValueError, match="needs a teacher"):
        MeanFlow(student, velocity="teacher")
    with pytest.raises(ValueError, match="unknown velocity"):
        MeanFlow(student, velocity="oracle")
    with pytest.raises(ValueError, match="ratio"):
        MeanFlow(student, ratio=1.5)


@pytest.mark.parametrize("velocity", ["data", "teacher"])
def test_training_updates_the_student_only(velocity: str, tmp_path):
    teacher = gmm_teacher_module()
    model = MeanFlow(meanflow_student_module(hidden=16), teacher, velocity=velocity, ema_decay=0.5)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = snapshot_params(model.student)
    data = NoiseDataModule([2], batch_size=16, num_batches=2, real=GMMData())
    trainer = quiet_trainer(default_root_dir=tmp_path)
    trainer.fit(model, data)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    after = snapshot_params(model.student)
    assert any(not torch.equal(v, student_before[k]) for k, v in after.items())
    assert model.ema is not None
    assert any(
        not torch.equal(p, q)
        for p, q in zip(model.ema.parameters(), model.student.parameters(), strict=True)
    )
    ckpt = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(ckpt)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    assert model.export_student(tmp_path / "mf").exists()


def test_teacher_velocity_is_the_conditional_mean_of_e_minus_x():
    """The distillation target v(z_t, t) averages e - x over the pairs that reach z_t."""
    teacher = gmm_teacher_module()
    model = MeanFlow(meanflow_student_module(hidden=8), teacher, velocity="teacher")
    x, e = torch.zeros(3, 2), torch.randn(3, 2)
    t = torch.full((3,), 0.5)
    z_t = 0.5 * x + 0.5 * e
    v = model.velocity(x, e, z_t, t)
    x0 = teacher(z_t, t)
    torch.testing.assert_close(v, (z_t - 0.5 * x0) / 0.5 - x0)  # eps_hat - x0_hat


@pytest.mark.parametrize("method", ["meanflow-data", "meanflow-distill"])
def test_bench_trainer_runs_and_improves(method: str):
    """A short run: generate works at 1, 2, 4 NFE; 2 NFE beats the identity map eps -> eps."""
    torch.set_num_threads(1)
    mixture, _ = ring_teacher()
    eps = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    true = mixture.sample(1000, torch.Generator().manual_seed(1))
    res = train_meanflow(method, steps=150, seed=0)
    assert res.method == method and res.steps == 150
    with torch.no_grad():
        out = {nfe: res.generate(eps, nfe) for nfe in (1, 2, 4)}
    assert all(x.shape == (1000, 2) and torch.isfinite(x).all() for x in out.values())
    assert energy_distance(out[2], true) < 0.75 * energy_distance(eps, true)  # identity: ~0.24


@pytest.mark.slow
def test_tuned_meanflow_beats_the_teachers_four_step_sampler_at_one_and_two_nfe():
    """The bench default (``meanflow-data``, 3,000 updates) against the exact teacher's Euler-4."""
    torch.set_num_threads(1)
    teacher_4, scores = ring_goal_scores(lambda: train_meanflow("meanflow", seed=0))
    for nfe, (energy, all_modes) in scores.items():
        assert energy < teacher_4 and all_modes, (nfe, energy, teacher_4)
