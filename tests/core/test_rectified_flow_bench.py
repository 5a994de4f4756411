"""The rectified-flow family's 2-D benchmark trainer: a few steps work; the tuned default wins."""

from __future__ import annotations

import pytest
import torch

from onestep.core.bench import traj_flow
from onestep.core.bench.traj_common import ring_teacher
from onestep.core.bench.traj_flow import FLOW_METHODS, FlowBenchConfig, VelocityMLP, train_flow
from onestep.core.metrics import energy_distance, mode_coverage
from onestep.core.sampling import sample

TINY = FlowBenchConfig(pairs=256, pair_steps=4, hidden=16, depth=1, batch_size=32)


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_trainer_runs_and_generate_uses_exactly_nfe_evaluations(method, monkeypatch):
    result = train_flow(method, steps=4, seed=0, config=TINY)
    assert result.method == method and result.train_s > 0
    assert result.steps == (6 if method == "reflow+distill" else 4)
    calls = []
    forward = VelocityMLP.forward

    def counting(self, x, t):
        calls.append(float(t[0]))
        return forward(self, x, t)

    monkeypatch.setattr(VelocityMLP, "forward", counting)
    eps = torch.randn(10, 2)
    for nfe in (1, 2, 4):
        calls.clear()
        x = result.generate(eps, nfe)
        assert x.shape == (10, 2) and bool(torch.isfinite(x).all())
        assert len(calls) == nfe
        assert calls[0] == 1.0
    with pytest.raises(ValueError, match="nfe"):
        result.generate(eps, 0)


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="unknown method"):
        train_flow("meanflow", steps=1, config=TINY)


def test_euler_is_exact_on_a_constant_velocity():
    class Constant(torch.nn.Module):
        def forward(self, x, t):
            return torch.ones_like(x)

    z = torch.randn(5, 2)
    for nfe in (1, 3):
        torch.testing.assert_close(traj_flow.euler(Constant(), z, nfe), z - 1)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kd", "reflow"])
def test_tuned_default_beats_the_teacher_four_step_sampler(method):
    torch.set_num_threads(1)
    mixture, teacher = ring_teacher()
    result = train_flow(method, seed=0)
    g = torch.Generator().manual_seed(1000)
    ref, eps = mixture.sample(4000, g), torch.randn(4000, 2, generator=g)
    with torch.no_grad():
        goal = energy_distance(sample(teacher, eps, 4, solver="euler"), ref)
        for nfe in (1, 2):
            x = result.generate(eps, nfe)
            assert energy_distance(x, ref) < goal, (method, nfe)
            assert mode_coverage(x, mixture).all_covered, (method, nfe)
