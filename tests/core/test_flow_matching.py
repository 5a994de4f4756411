"""Rectified-flow objectives against closed forms written here, on random tensors."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from onestep.core.objectives.flow_matching import (
    distillation_loss,
    flow_matching_loss,
    lpips_huber_loss,
    straight_interpolation,
    straight_velocity,
)


def _tensors(b: int = 5, shape: tuple[int, ...] = (3, 4, 4)):
    g = torch.Generator().manual_seed(1)
    x0, eps, v = (torch.randn(b, *shape, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.rand(b, generator=g, dtype=torch.float64)
    return x0, eps, v, t


def test_straight_interpolation_and_velocity_closed_form():
    x0, eps, _, t = _tensors()
    x_t = straight_interpolation(x0, eps, t)
    for b in range(x0.shape[0]):
        assert_close(x_t[b], (1 - t[b]) * x0[b] + t[b] * eps[b])
    # the ends of the path, and d x_t / dt by central differences equals eps - x0
    assert_close(straight_interpolation(x0, eps, torch.zeros_like(t)), x0)
    assert_close(straight_interpolation(x0, eps, torch.ones_like(t)), eps)
    h = 1e-6
    fd = (straight_interpolation(x0, eps, t + h) - straight_interpolation(x0, eps, t - h)) / (2 * h)
    assert_close(fd, straight_velocity(x0, eps))
    assert_close(straight_velocity(x0, eps), eps - x0)


def test_straight_path_matches_the_flow_process():
    from onestep.core.noise import flow

    x0, eps, _, t = _tensors()
    assert_close(straight_interpolation(x0, eps, t), flow().add_noise(x0, eps, t))


def test_flow_matching_l2_closed_form():
    x0, eps, v, _ = _tensors()
    expected = torch.stack([((v[b] - (eps[b] - x0[b])) ** 2).mean() for b in range(5)])
    assert_close(flow_matching_loss(v, x0, eps), expected)
    w = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    assert_close(flow_matching_loss(v, x0, eps, weight=w), w * expected)


def test_flow_matching_zero_at_the_straight_velocity():
    x0, eps, _, _ = _tensors()
    assert_close(flow_matching_loss(eps - x0, x0, eps), torch.zeros(5, dtype=torch.float64))


def test_flow_matching_pseudo_huber_closed_form():
    x0, eps, v, _ = _tensors()
    c = 0.3
    expected = torch.stack(
        [(((v[b] - eps[b] + x0[b]) ** 2).sum() + c**2).sqrt() - c for b in range(5)]
    )
    assert_close(flow_matching_loss(v, x0, eps, metric="pseudo_huber", c=c), expected)


def test_flow_matching_gradient_is_the_residual():
    """d/dv of mean((v - (eps - x0))^2) is 2 (v - eps + x0) / n (Liu et al. 2023, eq. 1)."""
    x0, eps, v, _ = _tensors()
    v = v.clone().requires_grad_(True)
    flow_matching_loss(v, x0, eps).sum().backward()
    n = v[0].numel()
    assert v.grad is not None
    assert_close(v.grad, 2 * (v.detach() - eps + x0) / n)


def test_pseudo_huber_gradient_is_bounded():
    """Pseudo-Huber's gradient norm is < 1 per sample however far the outlier (RF++ sec. 4.2)."""
    x0, eps, v, _ = _tensors()
    v = (1e3 * v).requires_grad_(True)
    flow_matching_loss(v, x0, eps, metric="pseudo_huber", c=0.1).sum().backward()
    assert v.grad is not None
    norms = v.grad.flatten(1).norm(dim=1)
    assert bool((norms < 1).all()) and bool((norms > 0.99).all())


def test_lpips_huber_closed_form_with_a_callable_perceptual_distance():
    x0, eps, v, t = _tensors()
    c = 0.2

    def perceptual(a, b):  # an L1 stand-in for LPIPS, [B]
        return (a - b).abs().flatten(1).mean(dim=1)

    loss = lpips_huber_loss(v, x0, eps, t, perceptual, c)
    for b in range(5):
        x_t = (1 - t[b]) * x0[b] + t[b] * eps[b]
        huber = (((v[b] - eps[b] + x0[b]) ** 2).sum() + c**2).sqrt() - c
        expected = (1 - t[b]) * huber + (x_t - t[b] * v[b] - x0[b]).abs().mean()
        assert_close(loss[b], expected)


def test_lpips_huber_rejects_a_batch_mean():
    x0, eps, v, t = _tensors()
    with pytest.raises(ValueError, match="per sample"):
        lpips_huber_loss(v, x0, eps, t, lambda a, b: (a - b).abs().mean(), 0.1)


def test_distillation_loss_closed_form_and_perceptual_term():
    x0, eps, _, _ = _tensors()
    l2 = torch.stack([((eps[b] - x0[b]) ** 2).mean() for b in range(5)])
    assert_close(distillation_loss(eps, x0), l2)
    l1 = torch.stack([(eps[b] - x0[b]).abs().sum() for b in range(5)])
    got = distillation_loss(eps, x0, perceptual=lambda a, b: (a - b).abs().flatten(1).sum(1))
    assert_close(got, l2 + l1)
    huber = distillation_loss(eps, x0, metric="pseudo_huber", c=1.0)
    assert_close(huber, (((eps - x0) ** 2).flatten(1).sum(1) + 1).sqrt() - 1)


def test_bad_inputs_raise():
    x0, eps, v, t = _tensors()
    with pytest.raises(ValueError, match="unknown distance"):
        flow_matching_loss(v, x0, eps, metric="l1")
    with pytest.raises(ValueError, match="one shape"):
        flow_matching_loss(v[:, :2], x0, eps)
    with pytest.raises(ValueError, match=r"t must have shape"):
        lpips_huber_loss(v, x0, eps, t[:2], lambda a, b: a.flatten(1).sum(1))
