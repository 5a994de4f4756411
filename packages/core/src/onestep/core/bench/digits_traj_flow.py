"""Digits trainers of the rectified-flow family: KD, reflow, reflow + distill (InstaFlow).

All three start from the digits teacher's weights and from the same couplings
``(z, x = ODE_teacher(z))`` (:meth:`~.digits_train.DigitsContext.teacher_pairs`, computed once
per run; each method's ``train_s`` includes their cost).

* ``kd`` (Luhman & Luhman 2021, eq. 6): ``G(x_t, t) = x_t - t u(x_t, t)`` regressed on the
  coupling's ``x`` at ``t = 1`` (plain KD) and at ``t`` in ``{1/2, 3/4, 1/4}`` on the pair's
  straight line, so 2-NFE sampling can re-apply ``G`` (as the 2-D trainer,
  :mod:`~onestep.core.bench.traj_flow`).
* ``reflow`` (Liu et al. 2023, eq. 6): flow matching on the couplings with RF++'s U-shaped ``t``
  (Lee et al. 2024); Euler with ``nfe`` steps.
* ``reflow+distill`` (InstaFlow, Liu et al. 2024, eq. 4): the ``reflow`` net (shared, its
  training counted in ``train_s``) distilled into ``G(z) = z - u_G(z, 1)`` on its own Euler ODE
  samples; ``nfe = 2``: ``G``, then one Euler step of the reflowed net from ``t = 1/2``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from onestep.core.bench.digits_nets import FlowVelocity
from onestep.core.bench.digits_train import DigitsContext, clone_teacher, fit
from onestep.core.bench.traj_common import TrajResult
from onestep.core.bench.traj_flow import KD_PROBS, KD_TIMES, euler, flow_generator
from onestep.core.noise import u_shaped
from onestep.core.objectives.flow_matching import (
    distillation_loss,
    flow_matching_loss,
    straight_interpolation,
)

__all__ = ["DigitsFlowConfig", "train_digits_flow"]


@dataclass(frozen=True)
class DigitsFlowConfig:
    """Hyperparameters of the digits flow family.

    Args:
        steps: updates of the main stage (KD, or reflow).
        distill_steps: updates of InstaFlow's distillation stage.
        distill_ode_steps: Euler steps of the reflowed net that make the distillation targets.
        batch_size: pairs per update.
        lr: Adam learning rate (cosine-decayed to ``lr_floor * lr``).
        lr_floor: final learning-rate factor.
        ema: EMA decay of every trained net.
        u_shape: ``a`` of RF++'s U-shaped time density.
        metric: distance of KD and of the distillation stage (``l2`` or ``pseudo_huber``).
    """

    steps: int = 2000
    distill_steps: int = 1000
    distill_ode_steps: int = 16
    batch_size: int = 256
    lr: float = 3e-4
    lr_floor: float = 0.05
    ema: float = 0.999
    u_shape: float = 4.0
    metric: str = "l2"


def _batch(n: int, size: int, gen: torch.Generator) -> Tensor:
    return torch.randint(0, n, (size,), generator=gen)


def _kd(ctx: DigitsContext, cfg: DigitsFlowConfig, z: Tensor, x: Tensor) -> FlowVelocity:
    """Luhman & Luhman's KD (``t = 1``) plus the re-application times of :data:`KD_TIMES`."""
    student = FlowVelocity(clone_teacher(ctx.teacher))
    times, probs = torch.tensor(KD_TIMES), torch.tensor(KD_PROBS)
    gen = torch.Generator().manual_seed(ctx.seed)

    def loss(_: int) -> Tensor:
        idx = _batch(z.shape[0], cfg.batch_size, gen)
        t = times[torch.multinomial(probs, cfg.batch_size, replacement=True, generator=gen)]
        x_t = straight_interpolation(x[idx], z[idx], t)
        g = x_t - t.view(-1, 1, 1, 1) * student(x_t, t)
        return distillation_loss(g, x[idx], metric=cfg.metric).mean()

    return fit(student, loss, cfg.steps, cfg.lr, ema=cfg.ema, lr_floor=cfg.lr_floor, log=ctx.log)


def _reflow(ctx: DigitsContext, cfg: DigitsFlowConfig, z: Tensor, x: Tensor) -> FlowVelocity:
    """Flow matching on the teacher's couplings (reflow), U-shaped ``t``."""
    student = FlowVelocity(clone_teacher(ctx.teacher))
    gen = torch.Generator().manual_seed(ctx.seed + 1)

    def loss(_: int) -> Tensor:
        idx = _batch(z.shape[0], cfg.batch_size, gen)
        t = u_shaped(cfg.batch_size, a=cfg.u_shape, generator=gen)
        x_t = straight_interpolation(x[idx], z[idx], t)
        return flow_matching_loss(student(x_t, t), x[idx], z[idx]).mean()

    return fit(student, loss, cfg.steps, cfg.lr, ema=cfg.ema, lr_floor=cfg.lr_floor, log=ctx.log)


def _distill(ctx: DigitsContext, cfg: DigitsFlowConfig, v: FlowVelocity) -> FlowVelocity:
    """InstaFlow's stage 2: ``G(z) = z - u_G(z, 1)`` from a copy of ``v`` on ``v``'s ODE."""
    gen = torch.Generator().manual_seed(ctx.seed + 2)
    z = torch.randn((ctx.pairs, *ctx.x_train.shape[1:]), generator=gen)
    with torch.no_grad():
        target = torch.cat([euler(v, c, cfg.distill_ode_steps) for c in z.split(4096)])
    student = FlowVelocity(clone_teacher(v.denoiser))  # starts as the reflowed net
    ones = torch.ones(cfg.batch_size)

    def loss(_: int) -> Tensor:
        idx = _batch(z.shape[0], cfg.batch_size, gen)
        g = z[idx] - student(z[idx], ones)
        return distillation_loss(g, target[idx], metric=cfg.metric).mean()

    steps = cfg.distill_steps
    return fit(student, loss, steps, cfg.lr, ema=cfg.ema, lr_floor=cfg.lr_floor, log=ctx.log)


def train_digits_flow(
    method: str, ctx: DigitsContext, config: DigitsFlowConfig | None = None
) -> TrajResult:
    """Train ``kd``, ``reflow`` or ``reflow+distill`` on the digits teacher (module docstring).

    ``ctx.steps`` (if set) replaces the main stage's updates and half of it the distillation's.
    """
    if method not in ("kd", "reflow", "reflow+distill"):
        raise ValueError(f"unknown digits flow method {method!r}; use kd, reflow, reflow+distill")
    cfg = config or DigitsFlowConfig()
    if ctx.steps is not None:
        cfg = replace(cfg, steps=ctx.steps, distill_steps=max(1, ctx.steps // 2))
    (z, x), pair_s = ctx.teacher_pairs()
    nets: dict[str, torch.nn.Module] = {}
    total, start = cfg.steps, time.perf_counter()
    if method == "kd":
        nets["g"] = _kd(ctx, cfg, z, x)
        main_s = time.perf_counter() - start
    else:  # the reflow stage is trained once per run and counted in full by both rows
        reflowed, main_s = ctx.shared(f"reflow-{cfg}", lambda: _reflow(ctx, cfg, z, x))
        nets["v"] = reflowed
        if method == "reflow+distill":
            start = time.perf_counter()
            nets["g"] = _distill(ctx, cfg, reflowed)
            main_s += time.perf_counter() - start
            total += cfg.distill_steps
    train_s = pair_s + main_s
    notes = (
        f"teacher pairs: {ctx.pairs} x {ctx.pair_steps}-step DPM-Solver++(2M) "
        f"({pair_s:.0f} s, in train s); init: teacher; lr {cfg.lr}, batch {cfg.batch_size}"
    )
    if method == "reflow+distill":
        notes += "; train s includes the reflow stage shared with the reflow row"
    return TrajResult(method, ctx.seed, flow_generator(method, nets), train_s, total, notes)
