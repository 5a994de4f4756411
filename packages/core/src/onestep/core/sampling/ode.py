"""Noise in, samples out: ODE sampling, whole trajectories and (noise, sample) pairs."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from onestep.core.sampling.grid import time_grid
from onestep.core.sampling.solvers import SOLVERS, DenoiserLike, _drive, _start, _steps

__all__ = ["ode_pairs", "sample", "trajectory"]


def trajectory(
    d: DenoiserLike,
    noise: Tensor,
    steps: int,
    *,
    solver: str = "euler",
    t_max: float = 1.0,
    t_min: float = 0.0,
    spacing: str = "uniform",
    cond: Any = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """All states of an ODE solve from ``x_T = sigma(t_max) noise`` (reflow, distillation).

    Args:
        d: Denoiser-like teacher.
        noise: standard normal draw, ``[B, ...]``.
        steps: solver steps.
        solver: one of :data:`SOLVERS`.
        t_max: start time.
        t_min: end time; ``0`` ends at the data.
        spacing: one of :data:`SPACINGS` (see :func:`time_grid`).
        cond: passed unchanged to ``d``.
        progress: show a tqdm bar.

    Returns:
        ``(ts, xs)``: times ``[steps + 1]`` (float64) and states ``[steps + 1, B, ...]`` with
        ``xs[0] = x_T`` and ``xs[-1]`` the sample. For Heun only the grid states are kept.
    """
    ts = time_grid(steps, t_max=t_max, t_min=t_min, spacing=spacing, process=d.process)
    x = _start(d.process, noise, float(ts[0]))
    it = _steps(solver, d, x, ts, cond)
    states = [x, *tqdm(it, total=steps, disable=not progress, desc=solver, leave=False)]
    return ts, torch.stack(states)


def sample(
    d: DenoiserLike,
    noise: Tensor,
    steps: int,
    *,
    solver: str = "euler",
    t_max: float = 1.0,
    t_min: float = 0.0,
    spacing: str = "uniform",
    cond: Any = None,
    progress: bool = False,
) -> Tensor:
    """Sample by solving the probability-flow ODE from ``x_T = sigma(t_max) noise``.

    ``x_T`` is the marginal at ``t_max`` without its (tiny) signal ``alpha(t_max) x0``: exact for
    flow / TrigFlow at ``t = 1``, and what diffusers does. NFE: :func:`nfe` (``euler``/``ddim``
    and ``dpm++2m``: ``steps``; ``heun``: ``2 steps - 1`` with ``t_min = 0``, else ``2 steps``).

    Args:
        d: Denoiser-like teacher (``d(x_t, t, cond) -> x0``, ``d.process``).
        noise: standard normal draw, ``[B, ...]``.
        steps: solver steps.
        solver: ``"euler"`` (= ``"ddim"``), ``"heun"`` or ``"dpm++2m"``.
        t_max: start time.
        t_min: end time; ``0`` ends at the data.
        spacing: one of :data:`SPACINGS` (see :func:`time_grid`).
        cond: passed unchanged to ``d``.
        progress: show a tqdm bar.

    Returns:
        Samples, same shape and dtype as ``noise``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; use one of {SOLVERS}")
    ts = time_grid(steps, t_max=t_max, t_min=t_min, spacing=spacing, process=d.process)
    x = _start(d.process, noise, float(ts[0]))
    return _drive(_steps(solver, d, x, ts, cond), x, steps, progress, solver)


def ode_pairs(
    d: DenoiserLike,
    noise: Tensor,
    steps: int,
    *,
    solver: str = "euler",
    t_max: float = 1.0,
    t_min: float = 0.0,
    spacing: str = "uniform",
    cond: Any = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(noise, sample)`` endpoints of the teacher's ODE, for reflow and distillation.

    Reflow (Liu et al. 2022, eq. 6) and knowledge distillation (Luhman & Luhman 2021) train on
    these couplings. Arguments as in :func:`sample`; ``noise`` is returned as given (the solve
    starts from ``sigma(t_max) noise``).
    """
    out = sample(
        d,
        noise,
        steps,
        solver=solver,
        t_max=t_max,
        t_min=t_min,
        spacing=spacing,
        cond=cond,
        progress=progress,
    )
    return noise, out
