"""CTM's jump and losses against closed forms written here (Kim et al. 2024, eq. 5, 7, 8)."""

from __future__ import annotations

import pytest
import torch

from onestep.core import noise
from onestep.core.objectives.ctm import (
    ctm_coefficients,
    ctm_dsm_loss,
    ctm_jump,
    ctm_loss,
    ctm_mid_time,
)

PROCESSES = {"flow": noise.flow(), "edm": noise.edm(), "vp": noise.vp(), "trig": noise.trig()}


def _times(b: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.rand(b, dtype=torch.float64) * 0.9 + 0.1
    s = t * torch.rand(b, dtype=torch.float64)
    return t, s


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_boundary_is_exact(name: str):
    process = PROCESSES[name]
    x_t, g = torch.randn(5, 3, 4), torch.randn(5, 3, 4)
    t = torch.tensor([1.0, 0.7, 0.3, 1e-3, 0.0])
    assert torch.equal(ctm_jump(process, x_t, g, t, t), x_t)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_jump_matches_scaled_edm_form(name: str):
    """``x_s = alpha_s [(r_s/r_t) y_t + (1 - r_s/r_t) g]``, ``y = x/alpha``, ``r = sigma/alpha``."""
    process = PROCESSES[name]
    t, s = _times()
    t = t.clamp(max=0.95)  # alpha_t > 0 for the scaled form
    x_t, g = torch.randn(6, 2, 3, dtype=torch.float64), torch.randn(6, 2, 3, dtype=torch.float64)
    a_t, sig_t, a_s, sig_s = (
        f(v).reshape(-1, 1, 1)
        for f, v in ((process.alpha, t), (process.sigma, t), (process.alpha, s), (process.sigma, s))
    )
    ratio = (sig_s / a_s) / (sig_t / a_t)
    expected = a_s * (ratio * x_t / a_t + (1 - ratio) * g)
    torch.testing.assert_close(ctm_jump(process, x_t, g, t, s), expected)


def test_edm_form_is_the_paper_formula():
    process = noise.edm()
    t, s = _times()
    sig_t, sig_s = process.sigma(t)[:, None], process.sigma(s)[:, None]
    x_t, g = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    expected = (sig_s / sig_t) * x_t + (1 - sig_s / sig_t) * g
    torch.testing.assert_close(ctm_jump(process, x_t, g, t, s), expected)


@pytest.mark.parametrize("name", ["flow", "vp", "trig"])
def test_exact_denoiser_gives_the_exact_ode_jump(name: str):
    """One data point: the ODE keeps eps fixed; G with g = x0 lands on alpha_s x0 + sigma_s eps."""
    process = PROCESSES[name]
    t, s = _times()
    x0, eps = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    x_t = process.add_noise(x0, eps, t)
    torch.testing.assert_close(ctm_jump(process, x_t, x0, t, s), process.add_noise(x0, eps, s))


def test_jump_to_zero_is_g_and_flow_is_finite_at_one():
    process = noise.flow()
    x_t, g = torch.randn(4, 2), torch.randn(4, 2)
    t, s = torch.ones(4), torch.zeros(4)
    torch.testing.assert_close(ctm_jump(process, x_t, g, t, s), g)
    a, b = ctm_coefficients(process, torch.ones(1), torch.full((1,), 0.25), 2)
    torch.testing.assert_close(a, torch.full((1, 1), 0.25))
    torch.testing.assert_close(b, torch.full((1, 1), 0.75))


def test_jump_rejects_forward_times():
    with pytest.raises(ValueError, match="s must be <= t"):
        ctm_jump(noise.flow(), torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2), torch.ones(2))


def test_mid_time():
    t, s, f = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.25]), torch.tensor([0.5, 1.0])
    torch.testing.assert_close(ctm_mid_time(t, s, f), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="frac"):
        ctm_mid_time(t, s, torch.tensor([1.5, 0.0]))


def test_ctm_loss_l2_and_gradient():
    pred = torch.randn(5, 3, 2, requires_grad=True)
    target = torch.randn(5, 3, 2, requires_grad=True)
    w = torch.rand(5)
    loss = ctm_loss(pred, target, "l2", weight=w)
    torch.testing.assert_close(loss, w * ((pred - target) ** 2).mean(dim=(1, 2)))
    loss.sum().backward()
    assert pred.grad is not None and target.grad is None  # stop-gradient target
    torch.testing.assert_close(pred.grad, (2 * w[:, None, None] / 6) * (pred - target).detach())


def test_ctm_loss_pseudo_huber():
    pred, target = torch.randn(4, 8), torch.randn(4, 8)
    c = 0.3
    sq = ((pred - target) ** 2).sum(dim=1)
    torch.testing.assert_close(ctm_loss(pred, target, "pseudo_huber", c=c), (sq + c * c).sqrt() - c)


def test_ctm_dsm_loss():
    g, x0 = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    torch.testing.assert_close(ctm_dsm_loss(g, x0, 2.0), 2.0 * ((g - x0) ** 2).mean(dim=(1, 2)))
    with pytest.raises(ValueError, match="one shape"):
        ctm_dsm_loss(g, x0[:, :1])
