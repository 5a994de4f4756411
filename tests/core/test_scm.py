"""sCM objectives (Lu & Song 2024) against closed forms written here, on random tensors."""

from __future__ import annotations

import math

import pytest
import torch

from onestep.core.methods.scm_jvp import TrigFlowStudent, trigflow_jvp
from onestep.core.objectives.scm import (
    clip_tangent,
    normalize_tangent,
    proposal_angle,
    scm_loss,
    scm_tangent,
    tangent_warmup,
    trigflow_consistency,
    trigflow_velocity,
)
from onestep.core.testing import TinyMLP

SIGMA_D = 0.5


def _student(dim: int = 3, dtype: torch.dtype = torch.float64) -> TrigFlowStudent:
    torch.manual_seed(3)
    return TrigFlowStudent(TinyMLP(dim, hidden=16), SIGMA_D).to(dtype)


def test_consistency_closed_form_and_exact_boundary():
    x, F = torch.randn(5, 2, 3), torch.randn(5, 2, 3)
    tau = torch.rand(5) * math.pi / 2
    rows = [math.cos(a) * x[i] - math.sin(a) * SIGMA_D * F[i] for i, a in enumerate(tau.tolist())]
    want = torch.stack(rows)
    torch.testing.assert_close(trigflow_consistency(x, F, tau, SIGMA_D), want)
    student = _student(dtype=torch.float32)
    x = torch.randn(7, 3)
    assert torch.equal(student(x, torch.zeros(7)), x)  # f(x, 0) = x bit for bit
    assert not torch.equal(student(x, torch.full((7,), 0.5)), x)


def test_velocity_is_the_trigflow_ode():
    x0, z = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    tau = 0.05 + torch.rand(6, dtype=torch.float64) * 1.5
    c, s = torch.cos(tau)[:, None], torch.sin(tau)[:, None]
    got = trigflow_velocity(c * x0 + s * z, x0, tau)
    torch.testing.assert_close(got, -s * x0 + c * z)
    with pytest.raises(ValueError, match="tau > 0"):
        trigflow_velocity(x0, x0, torch.zeros(6, dtype=torch.float64))


def test_tangent_closed_form_and_warmup():
    x, v, F, dF = (torch.randn(4, 3) for _ in range(4))
    tau = torch.rand(4) * 1.5
    for r in (0.0, 0.3, 1.0):
        got = scm_tangent(x, v, F, dF, tau, SIGMA_D, r)
        c, s = torch.cos(tau)[:, None], torch.sin(tau)[:, None]
        want = -c * (c * (SIGMA_D * F - v) + r * s * (x + SIGMA_D * dF))
        torch.testing.assert_close(got, want)
    assert [tangent_warmup(k, 10) for k in (0, 5, 10, 20)] == [0.0, 0.5, 1.0, 1.0]
    assert tangent_warmup(0, 0) == 1.0
    with pytest.raises(ValueError, match="r must lie"):
        scm_tangent(x, v, F, dF, tau, SIGMA_D, 1.5)


def _df_dtau_fd(student: TrigFlowStudent, x0, z, tau, h: float = 1e-7):
    """``d f(x_tau, tau) / d tau`` along the exact trajectory, by central differences.

    ``h`` is small because TinyMLP's time features reach frequency 1000.
    """

    def f(a):
        c, s = torch.cos(a)[:, None], torch.sin(a)[:, None]
        return student.consistency(c * x0 + s * z, a)

    return (f(tau + h) - f(tau - h)) / (2 * h)


def test_tangent_is_cos_times_df_dtau_along_the_trajectory():
    student = _student()
    x0, z = torch.randn(5, 3, dtype=torch.float64), SIGMA_D * torch.randn(5, 3, dtype=torch.float64)
    tau = 0.1 + 1.3 * torch.rand(5, dtype=torch.float64)
    c, s = torch.cos(tau)[:, None], torch.sin(tau)[:, None]
    x_t, v = c * x0 + s * z, -s * x0 + c * z
    with torch.no_grad():
        F, dF = trigflow_jvp(student.F, x_t, tau, v)
        g = scm_tangent(x_t, v, F, dF, tau, SIGMA_D, 1.0)
        torch.testing.assert_close(g, c * _df_dtau_fd(student, x0, z, tau), rtol=1e-6, atol=1e-8)


def test_tangent_cos_power_weights_df_dtau_by_cos_to_that_power():
    student = _student()
    x0, z = torch.randn(5, 3, dtype=torch.float64), SIGMA_D * torch.randn(5, 3, dtype=torch.float64)
    tau = 0.1 + 1.3 * torch.rand(5, dtype=torch.float64)
    c, s = torch.cos(tau)[:, None], torch.sin(tau)[:, None]
    x_t, v = c * x0 + s * z, -s * x0 + c * z
    with torch.no_grad():
        F, dF = trigflow_jvp(student.F, x_t, tau, v)
        df = _df_dtau_fd(student, x0, z, tau)
        for p in (0.0, 0.5, 2.0):
            g = scm_tangent(x_t, v, F, dF, tau, SIGMA_D, 1.0, cos_power=p)
            torch.testing.assert_close(g, c**p * df, rtol=1e-6, atol=1e-8)
        # at the 1-step angle the paper's tangent vanishes; p = 0 keeps df/dtau
        top = torch.full((5,), math.pi / 2, dtype=torch.float64)
        F, dF = trigflow_jvp(student.F, z, top, -x0)
        paper = scm_tangent(z, -x0, F, dF, top, SIGMA_D, 1.0)
        plain = scm_tangent(z, -x0, F, dF, top, SIGMA_D, 1.0, cos_power=0.0)
    assert paper.abs().max() < 1e-6 < plain.abs().max()
    with pytest.raises(ValueError, match="cos_power"):
        scm_tangent(x_t, v, F, dF, tau, SIGMA_D, 1.0, cos_power=-1.0)


def test_normalize_and_clip():
    g = torch.randn(4, 2, 3) * 5
    out = normalize_tangent(g, 0.1)
    n = g.flatten(1).norm(dim=1)
    torch.testing.assert_close(out.flatten(1).norm(dim=1), n / (n + 0.1))
    unit = out / out.flatten(1).norm(dim=1)[:, None, None]
    torch.testing.assert_close(unit, g / n[:, None, None])
    clipped = clip_tangent(g, 1.0)
    assert clipped.abs().max() == 1.0
    torch.testing.assert_close(clipped[g.abs() <= 1], g[g.abs() <= 1])
    torch.testing.assert_close(clipped[g.abs() > 1], g[g.abs() > 1].sign())
    with pytest.raises(ValueError, match="c > 0"):
        normalize_tangent(g, 0.0)


def test_proposal_matches_edm_lognormal():
    log_sigma = torch.randn(100, dtype=torch.float64) * 1.6 - 0.8
    tau = proposal_angle(log_sigma, SIGMA_D)
    torch.testing.assert_close(SIGMA_D * torch.tan(tau), torch.exp(log_sigma))
    assert bool(((tau > 0) & (tau < math.pi / 2)).all())


def test_loss_value_and_gradient_in_F_and_w():
    F_minus, g = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    F = F_minus.clone().requires_grad_(True)
    w = torch.randn(4, requires_grad=True)
    loss = scm_loss(F, F_minus, g, w)
    want = torch.exp(w) * ((F - F_minus - g) ** 2).mean(dim=(1, 2)) - w
    torch.testing.assert_close(loss, want)
    dF, dw = torch.autograd.grad(loss.sum(), (F, w))
    torch.testing.assert_close(dF, -2 * torch.exp(w)[:, None, None] / 6 * g)
    torch.testing.assert_close(dw, torch.exp(w) * (g**2).mean(dim=(1, 2)) - 1)
    with pytest.raises(ValueError, match="detached"):
        scm_loss(F, F, g)


def test_loss_gradient_is_the_papers_scm_gradient():
    """grad ||F - F- - g||^2 / D = (2 / D) grad E[-w(tau) sigma_d sin(tau) F^T df-/dtau] (sec. 4).

    With ``w(tau) = 1 / (sigma_d tan tau)``, ``r = 1`` and no normalisation; ``df-/dtau`` is
    taken by finite differences of ``f`` along the trajectory, independent of the jvp.
    """
    student = _student()
    x0, z = torch.randn(6, 3, dtype=torch.float64), SIGMA_D * torch.randn(6, 3, dtype=torch.float64)
    tau = 0.1 + 1.3 * torch.rand(6, dtype=torch.float64)
    c, s = torch.cos(tau)[:, None], torch.sin(tau)[:, None]
    x_t, v = c * x0 + s * z, -s * x0 + c * z
    with torch.no_grad():
        F_minus, dF = trigflow_jvp(student.F, x_t, tau, v)
        g = scm_tangent(x_t, v, F_minus, dF, tau, SIGMA_D, 1.0)
        df_fd = _df_dtau_fd(student, x0, z, tau)
    params = list(student.parameters())
    ours = torch.autograd.grad(scm_loss(student.F(x_t, tau), F_minus, g).sum(), params)
    weight = (1 / (SIGMA_D * torch.tan(tau)))[:, None]
    paper = (-weight * SIGMA_D * s * student.F(x_t, tau) * df_fd).sum()
    theirs = torch.autograd.grad(paper, params)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, 2 / 3 * b, rtol=1e-5, atol=1e-9)
