"""Consistency Trajectory Models (CTM, Kim et al. 2024): the any-to-any jump and its losses.

CTM learns ``G(x_t, t, s)``: the probability-flow ODE's solution at ``s`` from ``x_t`` at ``t``
(``s <= t``), for every pair of times. In EDM units (``alpha = 1``, ``t`` = noise level) the
paper parametrises it as (eq. 5)::

    G(x_t, t, s) = (s / t) x_t + (1 - s / t) g(x_t, t, s)

so that ``G(x_t, t, t) = x_t`` holds by construction and ``g`` is an ``x0``-like estimate
(``g(x_t, t, 0) = G(x_t, t, 0)``). For any affine process ``x_t = alpha x0 + sigma eps`` the same
map in the scaled variables ``y = x / alpha``, ``r = sigma / alpha`` reads, back in ``x``::

    G(x_t, t, s) = (sigma_s / sigma_t) x_t + (alpha_s - sigma_s alpha_t / sigma_t) g

i.e. a DDIM step to ``s`` with ``g`` in the role of the ``x0`` prediction; it is finite at
rectified flow's ``t = 1`` (``alpha = 0``) and reduces to eq. 5 for ``alpha = 1``.

Everything here is pure: the method calls the networks (student, its stop-grad copy, the EMA
target, the teacher's solver) and passes the tensors in.
"""

from __future__ import annotations

import torch
from torch import Tensor

from onestep.core.noise import NoiseProcess, append_dims
from onestep.core.objectives.distances import distance
from onestep.core.objectives.dsm import apply_weight, check_same_shape, mean_flat

__all__ = ["ctm_coefficients", "ctm_dsm_loss", "ctm_jump", "ctm_loss", "ctm_mid_time"]


def ctm_coefficients(
    process: NoiseProcess, t: Tensor, s: Tensor, ndim: int
) -> tuple[Tensor, Tensor]:
    """The skip and output scales ``(a, b)`` of ``G = a x_t + b g`` (Kim et al. 2024, eq. 5).

    ``a = sigma_s / sigma_t``, ``b = alpha_s - a alpha_t``; where ``s == t`` they are exactly
    ``(1, 0)`` (also at ``t = s = 0``, where ``sigma_t = 0``).

    Args:
        process: the noise process.
        t: start times ``[B]`` (``t > 0`` unless ``s == t``).
        s: end times ``[B]``, ``s <= t``.
        ndim: number of dims of the data batch, to broadcast against.
    """
    if t.shape != s.shape or t.ndim != 1:
        raise ValueError(f"t and s must both be [B], got {tuple(t.shape)} and {tuple(s.shape)}")
    if bool((s > t).any()):
        raise ValueError("CTM jumps backward in time only: every s must be <= t; swap the pair")
    same = t == s
    sigma_t = torch.where(same, torch.ones_like(t), process.sigma(t))
    a = torch.where(same, torch.ones_like(t), process.sigma(s) / sigma_t)
    b = torch.where(same, torch.zeros_like(t), process.alpha(s) - a * process.alpha(t))
    return append_dims(a, ndim), append_dims(b, ndim)


def ctm_jump(process: NoiseProcess, x_t: Tensor, g: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """``G(x_t, t, s) = (sigma_s / sigma_t) x_t + (alpha_s - sigma_s alpha_t / sigma_t) g``.

    Kim et al. 2024, eq. 5, written for any affine process (see the module docstring).
    ``G(x_t, t, t) = x_t`` exactly; at ``s = 0`` (``sigma = 0``, ``alpha = 1``) ``G = g``.

    Args:
        process: the noise process.
        x_t: states at ``t``, ``[B, ...]``.
        g: the network's ``x0``-like output ``g(x_t, t, s)``, same shape.
        t: start times ``[B]``.
        s: end times ``[B]``, ``s <= t``.

    Returns:
        States at ``s``, ``[B, ...]``.
    """
    check_same_shape(x_t=x_t, g=g)
    a, b = ctm_coefficients(process, t, s, x_t.ndim)
    return a.to(x_t.dtype) * x_t + b.to(x_t.dtype) * g


def ctm_mid_time(t: Tensor, s: Tensor, frac: Tensor) -> Tensor:
    """The teacher's intermediate time ``u = s + frac (t - s)``, ``frac`` in [0, 1] (sec. 4.1).

    CTM draws ``u ~ U[s, t)`` and lets the teacher's solver run from ``t`` to ``u``; ``frac`` is
    that uniform draw, passed in so this stays deterministic.
    """
    if bool(((frac < 0) | (frac > 1)).any()):
        raise ValueError("frac must lie in [0, 1]")
    return s + frac * (t - s)


def ctm_loss(
    pred_0: Tensor,
    target_0: Tensor,
    metric: str = "l2",
    c: float | None = None,
    weight: Tensor | float | None = None,
) -> Tensor:
    """Soft consistency matching (Kim et al. 2024, eq. 7), compared at time 0.

    With ``x_est = G_theta(x_t, t, s)`` and ``x_target = G_sg(theta-)(Solver(x_t, t, u), u, s)``
    both mapped to time 0 by the stop-gradient student ``G_sg(theta)(., s, 0)`` (the paper's
    comparison of ``x_est`` and ``x_target`` in the data space; the method makes these calls)::

        L[b] = weight[b] * d(G_sg(x_est, s, 0), G_sg(x_target, s, 0))

    Args:
        pred_0: ``G_sg(theta)(G_theta(x_t, t, s), s, 0)``; carries the student's gradient.
        target_0: ``G_sg(theta)(x_target, s, 0)``; detached here (stop-gradient target).
        metric: ``"l2"`` or ``"pseudo_huber"`` (see :func:`~.distances.distance`).
        c: pseudo-Huber scale (default ``0.00054 sqrt(d)``).
        weight: per-sample multiplier ``[B]`` (or a float); ``None`` means 1.

    Returns:
        Per-sample loss ``[B]``.
    """
    check_same_shape(pred_0=pred_0, target_0=target_0)
    return apply_weight(distance(metric, pred_0, target_0.detach(), c), weight)


def ctm_dsm_loss(g_tt: Tensor, x0: Tensor, weight: Tensor | float | None = None) -> Tensor:
    """CTM's denoising score matching term ``||x0 - g_theta(x_t, t, t)||^2`` (eq. 8).

    ``g(x_t, t, t)`` is the student's denoiser (its ``s -> t`` limit is the ODE's velocity), so
    this term keeps the infinitesimal jumps right. Mean over non-batch dims.

    Args:
        g_tt: the network's ``g`` with ``s = t``, ``[B, ...]``.
        x0: the clean samples ``x_t`` was made from, same shape.
        weight: per-sample multiplier ``[B]`` (or a float); ``None`` means 1.
    """
    check_same_shape(g_tt=g_tt, x0=x0)
    return apply_weight(mean_flat((g_tt - x0).square()), weight)
