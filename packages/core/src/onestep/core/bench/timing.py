"""What a training step costs: one full step against the sum of the passes it needs.

MEASURING.md: time one full step and each pass it needs in the same run, same inputs, after a
warm-up, as the median of interleaved repeats under a fixed ``torch.set_num_threads``; report
``step time / sum of passes``. Above about 1.15 the step spends time on something other than its
networks (data movement, Python glue, random draws) worth finding.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from onestep.core.bench.gmm_train import GMMConfig, GMMTrainer, flush_denormals, mixture_preset

__all__ = [
    "StepTiming",
    "dmd2_passes",
    "interleaved_medians",
    "measure_overhead",
    "time_dmd2_step",
]

Clock = Callable[[], float]


@dataclass
class StepTiming:
    """Median times (ms) of one step and of each pass, and how often the step runs each pass."""

    step_ms: float
    passes_ms: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def sum_ms(self) -> float:
        """``sum_i count_i * time_i``: the step's cost if it did nothing but its passes."""
        return sum(self.counts[k] * ms for k, ms in self.passes_ms.items())

    @property
    def ratio(self) -> float:
        """``step time / sum of passes`` (goal <= 1.15)."""
        return self.step_ms / self.sum_ms


def _time(fn: Callable[[], object], inner: int, clock: Clock) -> float:
    """Milliseconds per call of ``fn`` over ``inner`` back-to-back calls."""
    start = clock()
    for _ in range(inner):
        fn()
    return (clock() - start) * 1e3 / inner


def interleaved_medians(
    fns: Mapping[str, Callable[[], object]],
    *,
    repeats: int = 15,
    warmup: int = 3,
    inner: int = 5,
    clock: Clock = time.perf_counter,
) -> dict[str, float]:
    """Median milliseconds per call of each callable, timed round by round side by side.

    Each round times every callable once (``inner`` back-to-back calls), so background load
    hits every candidate alike; ratios of the medians are what MEASURING.md asks for.

    Args:
        fns: ``name -> callable`` on fixed inputs.
        repeats: timed rounds (median reported).
        warmup: untimed calls of each callable first.
        inner: back-to-back calls per timing, so timer noise does not swamp a fast call.
        clock: seconds; injectable for tests.
    """
    if repeats < 1 or inner < 1 or warmup < 0:
        raise ValueError(
            f"need repeats, inner >= 1 and warmup >= 0, got {repeats}, {inner}, {warmup}"
        )
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_time(fn, inner, clock))
    return {name: statistics.median(ts) for name, ts in times.items()}


def measure_overhead(
    step: Callable[[], object],
    passes: Mapping[str, tuple[Callable[[], object], int]],
    *,
    repeats: int = 15,
    warmup: int = 3,
    inner: int = 5,
    clock: Clock = time.perf_counter,
) -> StepTiming:
    """Time ``step`` and every pass, interleaved round by round; medians over ``repeats``.

    Args:
        step: one full training step.
        passes: ``name -> (pass, count)``: a callable doing one pass alone on fixed inputs, and
            how many times one step runs it.
        repeats: timed rounds (median reported).
        warmup: untimed calls of each callable first.
        inner: back-to-back calls per timing, so timer noise does not swamp a fast pass.
        clock: seconds; injectable for tests.

    Returns:
        The :class:`StepTiming`.
    """
    if not passes:
        raise ValueError("measure_overhead needs at least one pass to compare the step with")
    fns = {"step": step, **{name: fn for name, (fn, _) in passes.items()}}
    medians = interleaved_medians(fns, repeats=repeats, warmup=warmup, inner=inner, clock=clock)
    step_ms = medians.pop("step")
    return StepTiming(step_ms, medians, {name: count for name, (_, count) in passes.items()})


def dmd2_passes(trainer: GMMTrainer) -> dict[str, tuple[Callable[[], object], int]]:
    """The passes one DMD2 step of ``trainer`` needs, each alone on fixed inputs.

    Per fake-score update: a student forward (no grad) and a fake-score forward + backward +
    Adam step; per student update: a student forward + backward + Adam step, a teacher forward
    and a fake-score forward. Optimiser steps count as part of their network's pass.
    """
    cfg = trainer.config
    z = trainer.latents()
    with torch.no_grad():
        x_fake = trainer.student(z)
    t = trainer.times(z.shape[0], cfg.t_min, cfg.t_max)
    x_t = trainer.process.add_noise(x_fake, torch.randn(x_fake.shape, generator=trainer.gen), t)
    upstream = torch.randn(x_fake.shape, generator=trainer.gen)

    @torch.no_grad()
    def student_forward() -> object:
        return trainer.student(z)

    def student_forward_backward() -> None:
        trainer.opt_student.zero_grad(set_to_none=True)
        (trainer.student(z) * upstream).mean().backward()
        trainer.opt_student.step()

    @torch.no_grad()
    def teacher_forward() -> object:
        return trainer.teacher(x_t, t)

    @torch.no_grad()
    def fake_forward() -> object:
        return trainer.fake_score(x_t, t)

    return {
        "student fwd": (student_forward, cfg.fake_steps),
        "fake score fwd+bwd": (lambda: trainer.fake_score_step(x_fake), cfg.fake_steps),
        "student fwd+bwd": (student_forward_backward, 1),
        "teacher fwd": (teacher_forward, 1),
        "fake score fwd": (fake_forward, 1),
    }


def time_dmd2_step(
    config: GMMConfig | None = None, *, repeats: int = 15, warmup: int = 3, inner: int = 5
) -> StepTiming:
    """Time a DMD2 step of the 2-D benchmark against the sum of its passes (fresh networks)."""
    config = config or GMMConfig(objective="dmd2")
    trainer = GMMTrainer(config, mixture_preset(config.mixture))

    def step() -> None:
        trainer.critic_steps(config.fake_steps)
        trainer.student_step()

    with flush_denormals():
        return measure_overhead(
            step, dmd2_passes(trainer), repeats=repeats, warmup=warmup, inner=inner
        )
