"""Few-step student sampling: denoise, re-noise, denoise (consistency models, DMD2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from onestep.core.sampling.grid import _as_grid
from onestep.core.sampling.solvers import DenoiserLike, _batch_time, _denoise, _start

__all__ = ["few_step"]


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else x.device
    eps = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    return eps.to(x.device)


def few_step(
    student: DenoiserLike,
    noise: Tensor,
    ts: Tensor | Sequence[float],
    cond: Any = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, Alg. 1; DMD2, Yin et al. 2024, sec. 4.5).

    ``x0 = student(sigma(ts[0]) noise, ts[0])``; then for each later ``t`` in ``ts`` (a final
    ``0`` is skipped): ``x0 = student(process.add_noise(x0, eps, t), t)`` with fresh
    ``eps ~ N(0, I)`` from ``generator``. NFE: number of nonzero times.

    Args:
        student: Denoiser-like few-step generator (with ``.process``).
        noise: standard normal draw, ``[B, ...]``.
        ts: descending times, e.g. ``[1.0]`` (one step) or ``[1.0, 0.5]`` (two).
        cond: passed unchanged to the student.
        generator: random source of the re-noising draws (its device may differ from the data).

    Returns:
        The last ``x0``, same shape as ``noise``.
    """
    grid = _as_grid(ts, min_len=1)
    times = grid.tolist()
    if len(times) > 1 and times[-1] == 0.0:
        times = times[:-1]
    if times[0] == 0.0:
        raise ValueError(f"few_step needs a time > 0 to start from, got ts={grid.tolist()}")
    process = student.process
    x0 = _denoise(student, _start(process, noise, times[0]), times[0], cond)
    for t in times[1:]:
        t_batch = _batch_time(t, x0)
        x_t = process.add_noise(x0, _randn_like(x0, generator), t_batch).to(x0.dtype)
        x0 = student(x_t, t_batch, cond)
    return x0
