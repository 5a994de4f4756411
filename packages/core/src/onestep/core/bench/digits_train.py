"""Shared pieces of the digits trajectory trainers: run context, teacher copies, the Adam loop.

Each trainer (``bench/digits_traj_<family>.py``) distils the frozen digits teacher
(:mod:`onestep.core.demo.teacher`) into a few-step generator and returns a
:class:`~onestep.core.bench.traj_common.TrajResult`, as the 2-D trainers do. The loops are plain
PyTorch (the nets are small: a framework's per-step overhead would dominate), with an EMA of
the trained net (evaluated) and a cosine learning-rate decay
(:func:`~onestep.core.bench.schedule.cosine_to_floor`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from onestep.core.bench.gmm_train import flush_denormals
from onestep.core.bench.schedule import cosine_to_floor
from onestep.core.denoiser import Denoiser
from onestep.core.ema import ema_update_
from onestep.core.sampling import trajectory

__all__ = ["DigitsContext", "clone_teacher", "fit"]


@dataclass
class DigitsContext:
    """What a digits trainer gets: the frozen teacher, data and the shared budget knobs.

    Attributes:
        teacher: frozen rectified-flow teacher (flow prediction, network time ``1000 t``).
        x_train: training digits ``[N, 1, 8, 8]`` (CT's data; the other methods never see it).
        seed: seed of initialisation, noise and times.
        steps: generator updates per method (``None``: each trainer's tuned default).
        pairs: teacher ODE couplings (KD, reflow) and trajectories (CTM).
        pair_steps: DPM-Solver++(2M) steps of those teacher solves.
        log: progress output (``None``: quiet).
    """

    teacher: Denoiser
    x_train: Tensor
    seed: int = 0
    steps: int | None = None
    pairs: int = 16384
    pair_steps: int = 32
    log: Callable[[str], None] | None = None
    _shared: dict[str, tuple[Any, float]] = field(default_factory=dict, repr=False)

    def say(self, msg: str) -> None:
        """Log ``msg`` if a logger was given."""
        if self.log is not None:
            self.log(msg)

    def shared(self, key: str, make: Callable[[], Any]) -> tuple[Any, float]:
        """``make()`` once per run and its wall seconds; later calls reuse both.

        Expensive stages that several methods use (the teacher's ODE pairs, the reflowed net)
        are computed once; every method that uses one adds its seconds to its own ``train_s``.
        """
        if key not in self._shared:
            start = time.perf_counter()
            with flush_denormals():
                value = make()
            self._shared[key] = (value, time.perf_counter() - start)
        return self._shared[key]

    def teacher_trajectories(self) -> tuple[tuple[Tensor, Tensor], float]:
        """``((ts, xs), seconds)``: ``pairs`` teacher ODE solves, every grid state kept.

        DPM-Solver++(2M) with ``pair_steps`` uniform steps from ``z ~ N(0, I)`` (own seed, so
        every method sees the same solves); ``ts`` ``[K + 1]`` from 1 to 0, ``xs``
        ``[K + 1, pairs, 1, 8, 8]``. CTM walks these states (its solver, Kim et al. 2024,
        sec. 4); their endpoints are the couplings of :meth:`teacher_pairs`.
        """

        def make() -> tuple[Tensor, Tensor]:
            gen = torch.Generator().manual_seed(self.seed + 7)
            z = torch.randn((self.pairs, *self.x_train.shape[1:]), generator=gen)
            with torch.no_grad():
                ts, xs = trajectory(self.teacher, z, self.pair_steps, solver="dpm++2m")
            return ts.float(), xs

        return self.shared("teacher_trajectories", make)

    def teacher_pairs(self) -> tuple[tuple[Tensor, Tensor], float]:
        """``((z, x = ODE_teacher(z)), seconds)``: the trajectories' endpoints.

        The couplings of reflow (Liu et al. 2023, eq. 6) and knowledge distillation (Luhman &
        Luhman 2021).
        """
        (_, xs), seconds = self.teacher_trajectories()
        return (xs[0], xs[-1]), seconds


def clone_teacher(teacher: nn.Module) -> Any:
    """A trainable copy of the frozen teacher (students start from its weights)."""
    return copy.deepcopy(teacher).requires_grad_(True).train()


def fit(
    model: nn.Module,
    loss_fn: Callable[[int], Tensor],
    steps: int,
    lr: float,
    *,
    ema: float = 0.999,
    lr_floor: float = 0.05,
    clip: float | None = 1.0,
    extra: list[nn.Parameter] | None = None,
    after_step: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> Any:
    """Adam on ``loss_fn(step)`` (a scalar) for ``steps`` updates; returns an EMA of ``model``.

    Args:
        model: the trained net (its parameters, plus ``extra``, are optimised).
        loss_fn: ``step -> loss``; draws its own batch.
        steps: updates.
        lr: Adam learning rate, cosine-decayed to ``lr_floor * lr``.
        ema: EMA decay of the returned copy, warmed up as ``min(ema, (1 + i) / (10 + i))`` so
            short runs average too.
        lr_floor: final learning-rate factor.
        clip: gradient-norm clip (``None``: none).
        extra: further parameters to optimise (e.g. sCM's adaptive weight).
        after_step: called with the step index after each update (target-network EMAs).
        log: progress output every 500 updates.
    """
    average = copy.deepcopy(model).requires_grad_(False).eval()
    params = [*model.parameters(), *(extra or [])]
    opt = torch.optim.Adam(params, lr=lr)
    sched = cosine_to_floor(opt, steps, lr_floor)
    model.train()
    with flush_denormals():
        for i in range(steps):
            loss = loss_fn(i)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            sched.step()
            ema_update_(average, model, min(ema, (1 + i) / (10 + i)))
            if after_step is not None:
                after_step(i)
            if log is not None and (i % 500 == 0 or i == steps - 1):
                log(f"    step {i}: loss {loss.item():.5f}")
    return average
