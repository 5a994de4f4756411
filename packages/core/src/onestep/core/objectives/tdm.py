"""Trajectory distribution matching for K-step students (TDM, Luo et al. 2025).

"Learning Few-Step Diffusion Models by Trajectory Distribution Matching" (the base of
Video-BLADE's sparsity-aware TDM). A K-step student runs ``x_{t_0} -> x_{t_1} -> ... -> x_{t_K}``
on its schedule ``1 = t_0 > t_1 > ... > t_K = 0``; at step ``k`` it outputs an ``x0`` estimate
``xhat_k`` from ``x_{t_k}``. Instead of matching only the final sample, TDM matches the
distribution of every step's output, and does so where that step lives: ``xhat_k`` is re-noised
to a time drawn inside the step's own interval ``[t_{k+1}, t_k]``, the teacher and the fake score
(trained on the student's re-noised outputs at the same times, which makes it aware of the
sampling step) give ``x0_real_k`` and ``x0_fake_k`` there, and each step contributes a DMD
gradient.

Interpretation (stated; see the report of this module's author): each step's term is
:func:`~onestep.core.objectives.distribution.dmd_loss` (``normalize=True``) or
:func:`~onestep.core.objectives.distribution.vsd_loss` (``normalize=False``); the per-step terms
are combined with ``step_weights`` (default: the mean over steps). Drawing the times is
:func:`tdm_times`, a helper with randomness; :func:`tdm_loss` itself is pure.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from onestep.core.objectives.distribution import dmd_loss, vsd_loss

__all__ = ["tdm_loss", "tdm_times"]


def _schedule(schedule: Sequence[float] | Tensor) -> Tensor:
    sched = torch.as_tensor(schedule, dtype=torch.float32).detach().cpu()
    if sched.ndim != 1 or sched.numel() < 2:
        raise ValueError(
            f"schedule must list the K + 1 boundary times t_0 > ... > t_K, got {sched.tolist()}"
        )
    if not bool((sched[1:] < sched[:-1]).all()) or sched.min() < 0 or sched.max() > 1:
        raise ValueError(
            f"schedule must be strictly decreasing in [0, 1] (e.g. [1.0, 0.5, 0.0]), "
            f"got {sched.tolist()}"
        )
    return sched


def tdm_times(
    schedule: Sequence[float] | Tensor,
    n: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Times inside each student step's interval: row ``k`` is ``U[t_{k+1}, t_k]``.

    Args:
        schedule: the student's ``K + 1`` boundary times, strictly decreasing, e.g.
            ``[1.0, 0.75, 0.5, 0.25, 0.0]`` for 4 steps.
        n: times per step (the batch size).
        generator: random source (on the CPU).
        device: where the result goes.

    Returns:
        ``[K, n]`` times; ``out[k]`` lies in ``[schedule[k + 1], schedule[k]]``.
    """
    sched = _schedule(schedule)
    hi, lo = sched[:-1, None], sched[1:, None]  # (K, 1)
    u = torch.rand(hi.shape[0], n, generator=generator)
    return (lo + (hi - lo) * u).to(device)


def _stack(name: str, tensors: Sequence[Tensor] | Tensor) -> Tensor:
    out = tensors if torch.is_tensor(tensors) else torch.stack(list(tensors))
    if out.ndim < 2:
        raise ValueError(f"{name} must be [K, B, ...] or a list of K [B, ...], got {out.shape}")
    return out


def tdm_loss(
    x_steps: Sequence[Tensor] | Tensor,
    x0_real_steps: Sequence[Tensor] | Tensor,
    x0_fake_steps: Sequence[Tensor] | Tensor,
    step_weights: Tensor | Sequence[float] | None = None,
    *,
    normalize: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """TDM student loss: distribution matching on every step's output (Luo et al. 2025).

    ``L[b] = sum_k step_weights[k] * l_k[b]``, with ``l_k`` the DMD loss of step ``k``'s output
    ``x_steps[k]`` against predictions made at a time inside that step's interval (see
    :func:`tdm_times`). Only the student's outputs receive gradient.

    Args:
        x_steps: student outputs per step, ``[K, B, ...]`` or a list of ``K`` tensors ``[B, ...]``
            (they require grad).
        x0_real_steps: teacher's ``x0`` predictions at the re-noised outputs, same layout.
        x0_fake_steps: fake score's ``x0`` predictions there, same layout.
        step_weights: ``[K]`` or ``[K, B]`` weights; ``None`` means ``1 / K`` (mean over steps).
        normalize: use DMD's ``1 / mean|x - x0_real|`` normaliser per step (``dmd_loss``);
            ``False`` gives the plain VSD direction (``vsd_loss``) per step.
        eps: the DMD normaliser's guard.

    Returns:
        Per-sample loss ``[B]``.
    """
    x = _stack("x_steps", x_steps)
    real = _stack("x0_real_steps", x0_real_steps)
    fake = _stack("x0_fake_steps", x0_fake_steps)
    if not x.shape == real.shape == fake.shape:
        raise ValueError(
            f"per-step tensors must share one shape, got {tuple(x.shape)}, "
            f"{tuple(real.shape)}, {tuple(fake.shape)}"
        )
    k, b = x.shape[:2]
    w = torch.full((k,), 1.0 / k) if step_weights is None else torch.as_tensor(step_weights)
    w = w.to(device=x.device, dtype=x.dtype)
    if w.shape not in ((k,), (k, b)):
        raise ValueError(f"step_weights must be [K] = [{k}] or [K, B], got {tuple(w.shape)}")
    w = w.reshape(k, -1).expand(k, b)
    total = x.new_zeros(b)
    for i in range(k):
        if normalize:
            total = total + dmd_loss(x[i], real[i], fake[i], eps, weight=w[i])
        else:
            total = total + vsd_loss(x[i], real[i], fake[i], weight=w[i])
    return total
