"""Student generation for distribution matching: one step, or few steps with backward simulation.

A few-step student with step schedule ``times = [t_0 = 1, t_1, ..., t_{K-1}]`` samples as
``x0 = G(sigma(t_0) z, t_0)``, then ``x0 = G(alpha(t_k) x0 + sigma(t_k) eps, t_k)`` (DMD2, Yin et
al. 2024, sec. 4.5). Training at step ``k`` uses **backward simulation**: the input ``x_{t_k}`` is
made by running the student's own first ``k`` steps (without gradient) from noise, so the student
trains on the inputs it will see at inference, not on noised real data.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from onestep.core.noise import NoiseProcess

__all__ = ["check_times", "generate", "start_noise"]


def check_times(times: Sequence[float]) -> list[float]:
    """Validate a student step schedule: strictly decreasing, in (0, 1]."""
    ts = [float(t) for t in times]
    if not ts:
        raise ValueError("student_times must hold at least one time, e.g. [1.0]")
    if any(not 0.0 < t <= 1.0 for t in ts) or any(a <= b for a, b in itertools.pairwise(ts)):
        raise ValueError(f"student_times must be strictly decreasing in (0, 1], got {ts}")
    return ts


def start_noise(process: NoiseProcess, z: Tensor, t: float) -> Tensor:
    """``x_t = sigma(t) z``: the marginal at the start time, whose signal part ``alpha(t)`` ~ 0."""
    return process.sigma(torch.tensor(float(t), dtype=torch.float64)).item() * z


def _time(t: float, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)


def generate(
    student: nn.Module,
    process: NoiseProcess,
    z: Tensor,
    times: Sequence[float],
    step: int,
    noise: Callable[[Sequence[int]], Tensor],
    cond: Any = None,
) -> Tensor:
    """The student's ``x0`` at step ``step`` of its schedule, with backward simulation.

    Args:
        student: Denoiser-like, ``student(x_t, t, cond) -> x0``.
        process: the noise process of the schedule.
        z: standard normal latents ``[B, ...]``.
        times: the step schedule (see :func:`check_times`).
        step: which step trains; steps ``0..step-1`` run without gradient.
        noise: draws standard normal re-noising ``eps`` of a given shape.
        cond: passed to the student.

    Returns:
        ``x0`` of step ``step``, ``[B, ...]``, differentiable w.r.t. the student's parameters
        (when gradients are enabled).
    """
    if not 0 <= step < len(times):
        raise ValueError(f"step must be in 0..{len(times) - 1} for times={list(times)}, got {step}")
    x_t = start_noise(process, z, times[0])
    with torch.no_grad():
        for k in range(step):
            x0 = student(x_t, _time(times[k], z), cond)
            x_t = process.add_noise(x0, noise(z.shape).to(z), _time(times[k + 1], z))
    return student(x_t, _time(times[step], z), cond)
