"""Consistency objectives and the consistency function, against closed forms written here."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.testing import assert_close

from onestep.core import noise
from onestep.core.methods.consistency_function import ConsistencyFunction, consistency_sample
from onestep.core.methods.consistency_grid import ConsistencyGrid
from onestep.core.objectives import consistency as cm
from onestep.core.testing import tiny_denoiser

PROCESSES = {"flow": noise.flow(), "edm": noise.edm(), "vp": noise.vp(), "trig": noise.trig()}


def test_scalings_closed_form():
    r = torch.rand(64, dtype=torch.float64) * 10 + 0.3
    r_min, sd = 0.2, 0.7
    c_skip, c_out = cm.consistency_scalings(r, r_min, sd)
    delta = r - r_min
    assert_close(c_skip, sd**2 / (delta**2 + sd**2))
    assert_close(c_out, delta / torch.sqrt(delta**2 + sd**2))


def test_scalings_ends_are_exact():
    r = torch.tensor([0.2, math.inf, 0.1])
    c_skip, c_out = cm.consistency_scalings(r, 0.2, 0.5)
    assert c_skip.tolist() == [1.0, 0.0, 1.0]  # below r_min counts as r_min
    assert c_out.tolist() == [0.0, 1.0, 0.0]


def test_scalings_reject_bad_sigma_data():
    with pytest.raises(ValueError, match="sigma_data"):
        cm.consistency_scalings(torch.ones(2), 0.0, 0.0)


@pytest.mark.parametrize("name", sorted(PROCESSES))
@pytest.mark.parametrize("t_min", [0.0, 0.05])
def test_boundary_condition_is_exact(name: str, t_min: float):
    process = PROCESSES[name]
    f = ConsistencyFunction(tiny_denoiser(2, process, "eps", hidden=16), 0.5, t_min)
    x = torch.randn(32, 2) * 3
    out = f(x, torch.full((32,), t_min))
    assert torch.equal(out, x)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_consistency_function_away_from_boundary(name: str):
    process = PROCESSES[name]
    d = tiny_denoiser(2, process, "x0", hidden=16)
    f = ConsistencyFunction(d, sigma_data=0.5, t_min=0.0)
    x, t = torch.randn(16, 2), torch.rand(16) * 0.8 + 0.1
    t64 = t.double()
    r = process.sigma(t64) / process.alpha(t64)
    r0 = (process.sigma(torch.zeros(1, dtype=torch.float64)) / process.alpha(torch.zeros(1))).item()
    c_skip = 0.25 / ((r - r0) ** 2 + 0.25)
    c_out = (r - r0) / torch.sqrt((r - r0) ** 2 + 0.25)
    expected = c_skip[:, None].float() * x + c_out[:, None].float() * d(x, t)
    assert_close(f(x, t), expected, atol=1e-5, rtol=1e-5)


def test_consistency_function_needs_a_process():
    with pytest.raises(TypeError, match="process"):
        ConsistencyFunction(torch.nn.Linear(2, 2))


def test_l2_loss_and_gradient():
    a = torch.randn(8, 3, 4, requires_grad=True)
    b = torch.randn(8, 3, 4, requires_grad=True)
    w = torch.rand(8)
    loss = cm.consistency_loss(a, b, w, "l2")
    assert_close(loss, ((a - b) ** 2).mean(dim=(1, 2)) * w)
    loss.sum().backward()
    assert a.grad is not None
    assert_close(a.grad, 2 * (a - b).detach() / 12 * w[:, None, None])
    assert b.grad is None  # the target is a stop-gradient


def test_pseudo_huber_loss_and_gradient():
    a = torch.randn(8, 5, requires_grad=True)
    b = torch.randn(8, 5)
    c = 0.3
    loss = cm.consistency_loss(a, b, None, "pseudo_huber", c)
    norm2 = ((a - b) ** 2).sum(dim=1)
    assert_close(loss, torch.sqrt(norm2 + c * c) - c)
    loss.sum().backward()
    assert a.grad is not None
    assert_close(a.grad, (a - b).detach() / torch.sqrt(norm2.detach() + c * c)[:, None])


def test_pseudo_huber_default_c_is_ict():
    a, b = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    c = 0.00054 * math.sqrt(3 * 8 * 8)
    expected = torch.sqrt(((a - b) ** 2).sum(dim=(1, 2, 3)) + c * c) - c
    assert_close(cm.consistency_loss(a, b, distance_name="pseudo_huber"), expected)


def test_loss_rejects_shape_mismatch_and_unknown_distance():
    with pytest.raises(ValueError, match="one shape"):
        cm.consistency_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="unknown distance"):
        cm.consistency_loss(torch.zeros(2, 3), torch.zeros(2, 3), distance_name="l1")


def test_ict_weight():
    r_cur, r_next = torch.tensor([0.1, 1.0]), torch.tensor([0.3, 3.0])
    assert_close(cm.ict_weight(r_next, r_cur), torch.tensor([5.0, 0.5]))
    with pytest.raises(ValueError, match="r_next > r_cur"):
        cm.ict_weight(r_cur, r_next)


def test_karras_sigmas_match_the_edm_ramp():
    s = cm.karras_sigmas(11, 0.002, 80.0, 7.0)
    i = torch.arange(11, dtype=torch.float64) / 10
    expected = (0.002 ** (1 / 7) + i * (80 ** (1 / 7) - 0.002 ** (1 / 7))) ** 7
    assert_close(s, expected.float())
    assert_close(s, noise.edm().sigma(torch.linspace(0, 1, 11)))


def test_ict_curriculum():
    # K = 1000, s0 = 10, s1 = 1280: K' = floor(1000 / 8) = 125.
    assert [cm.ict_num_scales(k, 1000) for k in (0, 124, 125, 250, 874, 875, 5000)] == [
        11,
        11,
        21,
        41,
        641,
        1281,
        1281,
    ]


def test_ict_time_probs_are_lognormal_masses():
    sigmas = cm.karras_sigmas(21)
    p = cm.ict_time_probs(sigmas, -1.1, 2.0)

    def cdf(s: float) -> float:
        return 0.5 * (1 + math.erf((math.log(s) + 1.1) / (2.0 * math.sqrt(2))))

    mass = torch.tensor([cdf(b) - cdf(a) for a, b in itertools.pairwise(sigmas.tolist())])
    assert_close(p, mass / mass.sum(), atol=1e-6, rtol=1e-5)
    assert_close(p.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_ct_pair_shares_x0_and_eps(name: str):
    process = PROCESSES[name]
    x0, eps = torch.randn(8, 2), torch.randn(8, 2)
    t_cur, t_next = torch.rand(8) * 0.5, torch.rand(8) * 0.4 + 0.5
    x_next, x_cur = cm.ct_pair(x0, eps, process, t_cur, t_next)
    assert_close(x_next, process.alpha(t_next)[:, None] * x0 + process.sigma(t_next)[:, None] * eps)
    assert_close(x_cur, process.alpha(t_cur)[:, None] * x0 + process.sigma(t_cur)[:, None] * eps)


def test_segment_lower_edge():
    t = torch.tensor([0.0, 0.1, 0.25, 0.26, 0.5, 0.99, 1.0])
    assert_close(cm.segment_lower_edge(t, 4), torch.tensor([0, 0, 0, 0.25, 0.25, 0.75, 0.75]))
    assert_close(cm.segment_lower_edge(t, 1), torch.zeros(7))
    with pytest.raises(ValueError, match="segments"):
        cm.segment_lower_edge(t, 0)


def test_segment_schedule_is_progressive():
    assert [cm.segment_schedule(k, 100) for k in (0, 24, 25, 50, 99)] == [8, 8, 4, 2, 1]


def test_karras_grid_on_edm_is_the_uniform_grid():
    grid = ConsistencyGrid(noise.edm(), "karras", 0.0, 1.0, num_scales=10)
    assert_close(grid.times(), torch.linspace(0, 1, 11), atol=1e-5, rtol=0)


def test_grid_pairs_skip_k_steps():
    grid = ConsistencyGrid(noise.flow(), "uniform", 0.0, 1.0, num_scales=10, skip=3)
    t_cur, t_next = grid.pair(torch.tensor([0, 7]))
    assert_close(t_cur, torch.tensor([0.0, 0.7]))
    assert_close(t_next, torch.tensor([0.3, 1.0]))


def test_consistency_sample_uses_one_evaluation_per_time():
    calls = []
    d = tiny_denoiser(2, noise.flow(), "x0", hidden=16)
    f = ConsistencyFunction(d)
    d.register_forward_hook(lambda *_: calls.append(1))
    z = torch.randn(5, 2)
    x1 = consistency_sample(f, z, [1.0])
    assert len(calls) == 1
    # One step from t = 1 on rectified flow: x_1 = z, so f(z, 1).
    assert_close(x1, f(z, torch.ones(5)))
    calls.clear()
    consistency_sample(f, z, [1.0, 0.6, 0.3])
    assert len(calls) == 3
    with pytest.raises(ValueError, match="decreasing"):
        consistency_sample(f, z, [0.5, 0.7])
