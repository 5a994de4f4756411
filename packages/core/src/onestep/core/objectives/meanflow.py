"""MeanFlow (Geng et al. 2025): the average velocity and its identity target.

The average velocity between times ``r <= t`` of a flow ``dz/dt = v(z, t)`` is
``u(z_t, r, t) = (1 / (t - r)) int_r^t v(z_tau, tau) d tau`` (eq. 3), so one step
``z_r = z_t - (t - r) u(z_t, r, t)`` is exact and ``z_0 = z_1 - u(z_1, 0, 1)`` generates in one
network evaluation. Differentiating ``(t - r) u = int_r^t v`` in ``t`` gives the MeanFlow
identity (eq. 6)::

    u(z_t, r, t) = v(z_t, t) - (t - r) d/dt u(z_t, r, t)

with the total derivative ``d/dt u = v d_z u + d_t u`` (eq. 8): a Jacobian-vector product of
``u`` along the tangent ``(v, 0, 1)`` of ``(z, r, t)``. Training regresses ``u_theta`` on the
stop-gradient right-hand side (eq. 9-10). Times follow rectified flow: ``t = 0`` data,
``t = 1`` noise, ``z_t = (1 - t) x + t e`` and ``v = e - x`` (or a teacher's velocity).

:func:`meanflow_target` takes any callable ``u_fn(z, r, t)``, so the same kernel serves image
students and the RL package's one-step flow policies.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from onestep.core.noise import append_dims
from onestep.core.objectives.dsm import apply_weight, check_same_shape

__all__ = ["meanflow_loss", "meanflow_target", "meanflow_times"]

AverageVelocity = Callable[[Tensor, Tensor, Tensor], Tensor]


def meanflow_target(
    u_fn: AverageVelocity, z: Tensor, r: Tensor, t: Tensor, v: Tensor
) -> tuple[Tensor, Tensor]:
    """The average velocity at ``(z, r, t)`` and its MeanFlow-identity target (eq. 6, 8).

    One forward-mode pass (``torch.func.jvp``) gives both ``u = u_fn(z, r, t)`` and its total
    time derivative ``du/dt = v . d_z u + d_t u`` along the tangent ``(v, 0, 1)``.

    Args:
        u_fn: ``u_fn(z, r, t) -> [B, ...]``; a network, or any differentiable function.
        z: states ``z_t``, ``[B, ...]``.
        r: end times ``[B]``, ``r <= t``.
        t: start times ``[B]``.
        v: the instantaneous velocity at ``(z, t)``, ``[B, ...]``: ``e - x`` when training
            from data, a teacher's ``velocity(z, t)`` when distilling.

    Returns:
        ``(u, u_tgt)``: ``u`` keeps the graph to ``u_fn``'s parameters (it is the
        prediction), ``u_tgt = v - (t - r) du/dt`` is detached (stop-gradient, eq. 9).
    """
    check_same_shape(z=z, v=v)
    b = z.shape[0]
    if r.shape != (b,) or t.shape != (b,):
        raise ValueError(f"r and t must be [B] = [{b}], got {tuple(r.shape)} and {tuple(t.shape)}")
    if bool((r > t).any()):
        raise ValueError("MeanFlow needs r <= t for every sample; swap the pair")
    out = torch.func.jvp(u_fn, (z, r, t), (v.detach(), torch.zeros_like(r), torch.ones_like(t)))
    u, dudt = out[0], out[1]
    u_tgt = v - append_dims(t - r, z.ndim).to(z.dtype) * dudt
    return u, u_tgt.detach()


def meanflow_loss(
    u: Tensor,
    u_tgt: Tensor,
    p: float = 1.0,
    c: float = 1e-3,
    weight: Tensor | float | None = None,
) -> Tensor:
    """Adaptively weighted MeanFlow regression (Geng et al. 2025, eq. 9 and sec. 4.3).

    ``delta = u - sg(u_tgt)``, ``L[b] = sg(w) ||delta||^2`` with ``w = 1 / (||delta||^2 + c)^p``
    (the squared norm summed over the non-batch dims, as in the paper). ``p = 0`` is plain
    squared L2; ``p = 0.5`` behaves like pseudo-Huber; the paper's default is ``p = 1``.

    Args:
        u: predicted average velocity ``[B, ...]`` (with gradient).
        u_tgt: the identity target, same shape (detached here).
        p: the adaptive weighting power.
        c: the small constant that keeps ``w`` finite.
        weight: extra per-sample multiplier ``[B]`` (or a float); ``None`` means 1.

    Returns:
        Per-sample loss ``[B]``.
    """
    check_same_shape(u=u, u_tgt=u_tgt)
    if c <= 0:
        raise ValueError(f"meanflow_loss needs c > 0 (paper: 1e-3), got {c}")
    sq = (u - u_tgt.detach()).square().flatten(1).sum(dim=1)
    w = (sq.detach() + c).pow(-p)
    return apply_weight(w * sq, weight)


def meanflow_times(a: Tensor, b: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """``(r, t)`` from two time draws: ``t = max(a, b)``, ``r = min(a, b)`` where ``keep``.

    Geng et al. 2025, sec. 4.3 / Table 1a: only a fraction of the batch (25% by default) has
    ``r != t``; for the rest ``r = t`` and the loss is plain flow matching. ``a``, ``b`` come from
    the method's time sampler (e.g. logit-normal), ``keep`` from a Bernoulli draw.

    Args:
        a: first draw ``[B]`` in [0, 1].
        b: second draw ``[B]``.
        keep: bool ``[B]``; ``True`` keeps ``r < t``, ``False`` sets ``r = t``.
    """
    t = torch.maximum(a, b)
    r = torch.where(keep, torch.minimum(a, b), t)
    return r, t
