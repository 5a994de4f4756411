"""MeanFlow's identity target and loss against closed forms and finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from onestep.core.objectives.meanflow import meanflow_loss, meanflow_target, meanflow_times
from onestep.core.testing import TwoTimeMLP


def _pair(b: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.rand(b, dtype=torch.float64) * 0.8 + 0.2
    r = t * torch.rand(b, dtype=torch.float64)
    return r, t


def test_target_matches_analytic_total_derivative():
    """u = z sin(t) + r^2 t: du/dt along (v, 0, 1) is v sin(t) + z cos(t) + r^2."""
    r, t = _pair()
    z, v = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)

    def u_fn(z, r, t):
        return z * torch.sin(t)[:, None] + (r**2 * t)[:, None]

    u, u_tgt = meanflow_target(u_fn, z, r, t, v)
    dudt = v * torch.sin(t)[:, None] + z * torch.cos(t)[:, None] + (r**2)[:, None]
    torch.testing.assert_close(u, u_fn(z, r, t))
    torch.testing.assert_close(u_tgt, v - (t - r)[:, None] * dudt)


def test_jvp_tangent_matches_finite_differences_of_a_network():
    torch.manual_seed(0)
    net = TwoTimeMLP(2, 16).double()

    def u_fn(z, r, t):
        return net(z, t, r)

    r, t = _pair()
    z, v = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    _, u_tgt = meanflow_target(u_fn, z, r, t, v)
    h = 1e-6
    with torch.no_grad():  # central difference along the trajectory (z + h v, r, t + h)
        fd = (u_fn(z + h * v, r, t + h) - u_fn(z - h * v, r, t - h)) / (2 * h)
    torch.testing.assert_close(u_tgt, v - (t - r)[:, None] * fd, rtol=1e-6, atol=1e-6)


def test_identity_holds_for_the_exact_average_velocity():
    """dz/dt = a z: u(z_t, r, t) = z_t (1 - exp(-a (t - r))) / (t - r) satisfies the identity."""
    a = -1.3
    r, t = _pair()
    z = torch.randn(6, 4, dtype=torch.float64)

    def u_exact(z, r, t):
        dt = (t - r)[:, None]
        return z * (1 - torch.exp(-a * dt)) / dt

    u, u_tgt = meanflow_target(u_exact, z, r, t, a * z)
    torch.testing.assert_close(u_tgt, u)
    # ... and its one step lands on the exact solution z_r = z_t exp(-a (t - r)).
    torch.testing.assert_close(z - (t - r)[:, None] * u, z * torch.exp(-a * (t - r))[:, None])


def test_target_is_detached_and_prediction_carries_the_graph():
    torch.manual_seed(0)
    net = TwoTimeMLP(2, 8)
    r, t = _pair(4)
    u, u_tgt = meanflow_target(
        lambda z, r, t: net(z, t, r), torch.randn(4, 2), r.float(), t.float(), torch.randn(4, 2)
    )
    assert u.requires_grad and not u_tgt.requires_grad
    meanflow_loss(u, u_tgt).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_r_equal_t_is_flow_matching():
    """At r = t the target is v itself: the loss is plain flow matching."""
    z, v = torch.randn(3, 2), torch.randn(3, 2)
    t = torch.rand(3)
    _, u_tgt = meanflow_target(lambda z, r, t: z * t[:, None] ** 2, z, t, t, v)
    torch.testing.assert_close(u_tgt, v)


def test_rejects_r_after_t():
    with pytest.raises(ValueError, match="r <= t"):
        meanflow_target(
            lambda z, r, t: z, torch.zeros(2, 2), torch.ones(2), torch.zeros(2), torch.zeros(2, 2)
        )


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_adaptive_loss_value_and_gradient(p: float):
    u = torch.randn(5, 2, 3, requires_grad=True)
    u_tgt, c = torch.randn(5, 2, 3), 1e-2
    loss = meanflow_loss(u, u_tgt, p=p, c=c)
    sq = ((u - u_tgt) ** 2).sum(dim=(1, 2)).detach()
    torch.testing.assert_close(loss, sq / (sq + c) ** p)
    loss.sum().backward()
    assert u.grad is not None
    expected = 2 * (u - u_tgt).detach() / ((sq + c) ** p)[:, None, None]  # weight is sg
    torch.testing.assert_close(u.grad, expected)


def test_loss_rejects_bad_c():
    with pytest.raises(ValueError, match="c > 0"):
        meanflow_loss(torch.zeros(2, 2), torch.zeros(2, 2), c=0.0)


def test_times():
    a, b = torch.tensor([0.2, 0.9, 0.5]), torch.tensor([0.7, 0.1, 0.4])
    r, t = meanflow_times(a, b, torch.tensor([True, True, False]))
    torch.testing.assert_close(t, torch.tensor([0.7, 0.9, 0.5]))
    torch.testing.assert_close(r, torch.tensor([0.2, 0.1, 0.5]))
    assert math.isclose(float((t - r).min()), 0.0)
