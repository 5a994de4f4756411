"""Digits trainers of the two-time family: CTM (Kim et al. 2024) and MeanFlow (Geng et al. 2025).

Both students are the digits teacher with a second time input that starts with zero effect
(:class:`~onestep.core.bench.digits_nets.TwoTimeDigitsNet`), so training starts from the teacher:
CTM's ``G(x_t, t, s)`` from it is a DDIM jump, MeanFlow's ``u(z, r, t)`` from it is the
instantaneous velocity (a one-step Euler solve).

* ``ctm``: soft consistency matching (:func:`~onestep.core.bench.traj_ctm.ctm_batch_loss`, the
  2-D trainer's loss, rank-agnostic) on the teacher's ODE trajectories, solved once per run
  (:meth:`~.digits_train.DigitsContext.teacher_trajectories`, cost counted in ``train_s``);
  ``generate``: deterministic (``gamma = 0``) jumps on a uniform grid.
* ``meanflow``: the MeanFlow identity target
  (:func:`~onestep.core.objectives.meanflow.meanflow_target`, one ``torch.func.jvp``) with the
  teacher's velocity as ``v`` (distillation: the conditional expectation of ``e - x``, a
  lower-variance target than data), adaptive weight ``1 / (||delta||^2 + c)^p``;
  ``generate``: ``z_r = z_t - (t - r) u`` on a uniform grid.

Measured (seed 0): MeanFlow **misses** the goal at this budget. With ``p = 0.5`` the raw model's
1-NFE FD oscillates (677, 2235, 1770, 521 after 250, 500, 1000, 1500 updates at lr 1e-4; the EMA
ended at 1021 / 127 at 1 / 2 NFE in one run and 2848 / 2898 in a rerun): the identity target
differentiates the net in ``t`` through the teacher's time embedding of ``1000 t``, and the
updates amplify that derivative (the instability sCM, sec. 4.1, traces to large time scales).
``p = 1`` (the default) is stable, but gives the 1-step pair, whose error is largest, almost no
weight: the 1-NFE FD stays near the teacher's Euler step (~1530), the 2-NFE FD falls to ~173.
lr 1e-3 or 3e-4, 3000 updates and a second-time scale of 10 did not help.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from onestep.core.bench.digits_nets import TwoTimeDigitsNet
from onestep.core.bench.digits_train import DigitsContext, fit
from onestep.core.bench.traj_common import TrajResult
from onestep.core.bench.traj_ctm import CTMBenchConfig, ctm_batch_loss, grid_times
from onestep.core.ema import ema_update_
from onestep.core.methods.ctm import TrajectoryStudent, ctm_generate
from onestep.core.methods.meanflow import AverageVelocity, meanflow_generate
from onestep.core.noise import logit_normal
from onestep.core.objectives.meanflow import meanflow_loss, meanflow_target, meanflow_times

__all__ = ["DigitsTwoTimeConfig", "train_digits_ctm", "train_digits_meanflow"]


@dataclass(frozen=True)
class DigitsTwoTimeConfig:
    """Hyperparameters of a CTM or MeanFlow run on the digits.

    Args:
        steps: updates.
        batch_size: samples per update.
        lr: Adam learning rate (cosine-decayed to ``lr_floor * lr``).
        lr_floor: final learning-rate factor.
        ema: EMA decay of the evaluated net (and of CTM's target network).
        grid_frac: share of each batch on the sampler's own time pairs (1 -> 0, 1 -> 1/2,
            1/2 -> 0).
        ratio: MeanFlow's share of the batch with ``r < t`` (the rest is flow matching).
        p: MeanFlow's adaptive-weight power (the paper's 1: 0.5 was unstable here, see the
            module docstring).
        c: MeanFlow's adaptive-weight constant.
        time_mean: MeanFlow's logit-normal mean of the time draws.
        time_std: MeanFlow's logit-normal std.
        s_scale: network time of the second input per unit time (see
            :class:`~onestep.core.bench.digits_nets.TwoTimeDigitsNet`); MeanFlow differentiates
            the net in ``t`` through ``t - r``, so a small scale keeps that derivative tame.
    """

    steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-4
    lr_floor: float = 0.05
    ema: float = 0.999
    grid_frac: float = 0.5
    ratio: float = 0.75
    p: float = 1.0
    c: float = 1e-3
    time_mean: float = -0.4
    time_std: float = 1.0
    s_scale: float = 1000.0


def _two_time(ctx: DigitsContext, cfg: DigitsTwoTimeConfig) -> TwoTimeDigitsNet:
    return TwoTimeDigitsNet(copy.deepcopy(ctx.teacher.net), cfg.s_scale).requires_grad_(True)


def _config(ctx: DigitsContext, config: DigitsTwoTimeConfig | None) -> DigitsTwoTimeConfig:
    cfg = config or DigitsTwoTimeConfig()
    return cfg if ctx.steps is None else replace(cfg, steps=ctx.steps)


def train_digits_ctm(
    method: str, ctx: DigitsContext, config: DigitsTwoTimeConfig | None = None
) -> TrajResult:
    """CTM from the teacher's weights on its ODE trajectories (module docstring)."""
    if method != "ctm":
        raise ValueError(f"unknown digits CTM method {method!r}; use 'ctm'")
    cfg = _config(ctx, config)
    (ts, xs), traj_s = ctx.teacher_trajectories()
    start = time.perf_counter()
    torch.manual_seed(ctx.seed)  # ctm_batch_loss draws its indices from the global generator
    student = TrajectoryStudent(_two_time(ctx, cfg), ctx.teacher.process, "flow")
    target = copy.deepcopy(student).requires_grad_(False)
    batch = CTMBenchConfig(batch_size=cfg.batch_size, grid=len(ts) - 1, grid_frac=cfg.grid_frac)

    def update_target(i: int) -> None:
        ema_update_(target, student, min(cfg.ema, (1 + i) / (10 + i)))

    ema = fit(
        student,
        lambda _: ctm_batch_loss(student, target, ts, xs, batch),
        cfg.steps,
        cfg.lr,
        ema=cfg.ema,
        lr_floor=cfg.lr_floor,
        after_step=update_target,
        log=ctx.log,
    )

    def generate(eps: Tensor, nfe: int) -> Tensor:
        return ctm_generate(ema, eps, grid_times(nfe), gamma=0.0)

    train_s = time.perf_counter() - start + traj_s
    notes = (
        f"teacher init; {xs.shape[1]} DPM-Solver++(2M) trajectories on {len(ts) - 1} steps "
        f"({traj_s:.0f} s, in train s); gamma = 0 jumps on a uniform grid; EMA {cfg.ema}"
    )
    return TrajResult(method, ctx.seed, generate, train_s, cfg.steps, notes)


def _meanflow_times(n: int, cfg: DigitsTwoTimeConfig, gen: torch.Generator):
    """Logit-normal ``(r, t)``, ``r < t`` on ``ratio`` of the batch; some sampler pairs."""
    a, b = (logit_normal(n, mean=cfg.time_mean, std=cfg.time_std, generator=gen) for _ in "ab")
    r, t = meanflow_times(a, b, torch.rand(n, generator=gen) < cfg.ratio)
    pairs = torch.tensor([[0.0, 1.0], [0.5, 1.0], [0.0, 0.5]])
    pick = pairs[torch.randint(0, len(pairs), (n,), generator=gen)]
    on_grid = torch.rand(n, generator=gen) < cfg.grid_frac
    return torch.where(on_grid, pick[:, 0], r), torch.where(on_grid, pick[:, 1], t)


def train_digits_meanflow(
    method: str, ctx: DigitsContext, config: DigitsTwoTimeConfig | None = None
) -> TrajResult:
    """MeanFlow distillation from the teacher's weights and velocity (module docstring)."""
    if method != "meanflow":
        raise ValueError(f"unknown digits MeanFlow method {method!r}; use 'meanflow'")
    cfg = _config(ctx, config)
    start = time.perf_counter()
    model = AverageVelocity(_two_time(ctx, cfg))
    gen = torch.Generator().manual_seed(ctx.seed + 4)
    data, teacher = ctx.x_train, ctx.teacher

    def loss(_: int) -> Tensor:
        n = cfg.batch_size
        r, t = _meanflow_times(n, cfg, gen)
        x = data[torch.randint(0, data.shape[0], (n,), generator=gen)]
        e = torch.randn(x.shape, generator=gen)
        z_t = (1 - t.view(-1, 1, 1, 1)) * x + t.view(-1, 1, 1, 1) * e
        with torch.no_grad():
            v = teacher.raw(z_t, t)  # the teacher's velocity (native flow output)
        u, u_tgt = meanflow_target(model, z_t, r, t, v)
        return meanflow_loss(u, u_tgt, cfg.p, cfg.c).mean()

    ema = fit(model, loss, cfg.steps, cfg.lr, ema=cfg.ema, lr_floor=cfg.lr_floor, log=ctx.log)

    def generate(eps: Tensor, nfe: int) -> Tensor:
        return meanflow_generate(ema, eps, grid_times(nfe))

    notes = (
        f"teacher init, teacher velocity as v; r < t on {cfg.ratio:.0%}; p = {cfg.p}; EMA {cfg.ema}"
    )
    return TrajResult(method, ctx.seed, generate, time.perf_counter() - start, cfg.steps, notes)
