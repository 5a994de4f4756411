"""Digits trainers of the consistency family: CD (from the teacher) and CT (from scratch).

The student is a :class:`~onestep.core.methods.consistency_function.ConsistencyFunction`
(``f = c_skip x_t + c_out x0_hat``, Song et al. 2023, eq. 5) around a digits denoiser under
rectified flow. One update (Song et al. 2023, Alg. 2 for CD, Alg. 3 for CT): training digits
``x0`` noised at ``t_{n+1}`` on a :class:`~onestep.core.methods.consistency_grid.ConsistencyGrid`,
the earlier state ``x_{t_n}`` from one teacher ODE step (CD: Heun or DDIM,
:func:`~onestep.core.sampling.step.ode_step`) or from the same noise (CT), and
:func:`~onestep.core.objectives.consistency.consistency_loss` against an EMA target network.

* ``cd``: the student starts from the teacher's weights (as CD does, sec. 6).
* ``ct``: a fresh net of the teacher's architecture; iCT's doubling curriculum ``N(k)``
  (Song & Dhariwal 2023) and the pseudo-Huber distance, as the 2-D trainer
  (:mod:`~onestep.core.bench.traj_consistency`) found best.

``generate(eps, nfe)``: multi-step consistency sampling
(:func:`~onestep.core.methods.consistency_function.consistency_sample`) from the EMA student at
the grid's top time, then re-noised at :data:`RENOISE` (fixed-seed noise).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from onestep.core.bench.digits_train import DigitsContext, clone_teacher, fit
from onestep.core.bench.traj_common import TrajResult
from onestep.core.ema import ema_update_
from onestep.core.methods.consistency_function import ConsistencyFunction, consistency_sample
from onestep.core.methods.consistency_grid import ConsistencyGrid
from onestep.core.objectives import consistency as cm
from onestep.core.sampling.step import ode_step

__all__ = ["DEFAULTS", "RENOISE", "DigitsConsistencyConfig", "train_digits_consistency"]

# Re-noising times after the first step, by NFE (the 2-D trainer's choice).
RENOISE: dict[int, tuple[float, ...]] = {1: (), 2: (0.5,), 4: (0.7, 0.5, 0.3)}


@dataclass(frozen=True)
class DigitsConsistencyConfig:
    """Hyperparameters of one consistency run on the digits.

    Args:
        mode: ``cd`` (teacher ODE step, teacher init) or ``ct`` (same noise, fresh net).
        steps: optimiser updates.
        batch_size: digits per update.
        lr: Adam learning rate (cosine-decayed to ``lr_floor * lr``).
        lr_floor: final learning-rate factor.
        num_scales: grid intervals ``N`` (with ``curriculum``: the final ``N``).
        curriculum: iCT's doubling ``N(k)`` from ``s0`` to ``num_scales``.
        s0: first ``N`` of the curriculum.
        solver: the teacher's step, ``heun`` or ``ddim`` (CD).
        t_max: top of the grid (Heun on rectified flow needs ``alpha > 0``: below 1).
        target_ema: EMA decay of the target network ``theta^-``.
        ema: EMA decay of the evaluated weights.
        distance: ``l2`` or ``pseudo_huber``.
        sigma_data: ``sigma_d`` of the scalings (0.5 for images in [-1, 1]).
    """

    mode: str = "cd"
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-4
    lr_floor: float = 0.05
    num_scales: int = 32
    curriculum: bool = False
    s0: int = 8
    solver: str = "heun"
    t_max: float = 0.995
    target_ema: float = 0.99
    ema: float = 0.999
    distance: str = "l2"
    sigma_data: float = 0.5


DEFAULTS: dict[str, DigitsConsistencyConfig] = {
    "cd": DigitsConsistencyConfig(),
    # From scratch it needs a larger step size and more updates than the teacher-initialised CD
    # (4000 updates at 1e-3: FD 66 / 63 at 1 / 2 NFE; at 5e-4: 89 / 83).
    "ct": DigitsConsistencyConfig(
        mode="ct",
        steps=4000,
        lr=1e-3,
        curriculum=True,
        num_scales=256,
        target_ema=0.95,
        distance="pseudo_huber",
    ),
}


def _student(ctx: DigitsContext, cfg: DigitsConsistencyConfig) -> ConsistencyFunction:
    denoiser = clone_teacher(ctx.teacher)
    if cfg.mode == "ct":  # CT trains from scratch: the teacher's architecture, fresh weights
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed + 100)
            for module in denoiser.modules():
                if isinstance(module, nn.Linear | nn.LayerNorm):
                    module.reset_parameters()
    return ConsistencyFunction(denoiser, cfg.sigma_data)


def _loss_fn(
    ctx: DigitsContext,
    cfg: DigitsConsistencyConfig,
    student: ConsistencyFunction,
    target: ConsistencyFunction,
    grid: ConsistencyGrid,
) -> Callable[[int], Tensor]:
    gen = torch.Generator().manual_seed(ctx.seed + 3)
    data, process = ctx.x_train, student.process

    def loss(k: int) -> Tensor:
        if cfg.curriculum:
            grid.resize(cm.ict_num_scales(k, cfg.steps, cfg.s0, cfg.num_scales) - 1)
        b = cfg.batch_size
        x0 = data[torch.randint(0, data.shape[0], (b,), generator=gen)]
        eps = torch.randn(x0.shape, generator=gen)
        t_cur, t_next = grid.pair(torch.randint(grid.num_scales, (b,), generator=gen))
        x_next = process.add_noise(x0, eps, t_next)
        with torch.no_grad():
            if cfg.mode == "ct":
                x_cur = process.add_noise(x0, eps, t_cur)
            else:
                x_cur = ode_step(ctx.teacher, x_next, t_next, t_cur, cfg.solver)
            f_target = target(x_cur, t_cur)
        return cm.consistency_loss(student(x_next, t_next), f_target, None, cfg.distance).mean()

    return loss


def _generator(f: ConsistencyFunction, t_top: float) -> Callable[[Tensor, int], Tensor]:
    @torch.no_grad()
    def generate(eps: Tensor, nfe: int) -> Tensor:
        if nfe not in RENOISE:
            raise ValueError(f"consistency sampling supports nfe in {sorted(RENOISE)}, got {nfe}")
        gen = torch.Generator().manual_seed(1234)
        return consistency_sample(f, eps, [t_top, *RENOISE[nfe]], generator=gen)

    return generate


def train_digits_consistency(
    method: str, ctx: DigitsContext, config: DigitsConsistencyConfig | None = None
) -> TrajResult:
    """Train ``cd`` or ``ct`` on the digits (module docstring); ``ctx.steps`` overrides steps."""
    if method not in DEFAULTS:
        raise ValueError(f"unknown digits consistency method {method!r}; use {sorted(DEFAULTS)}")
    cfg = config or DEFAULTS[method]
    if ctx.steps is not None:
        cfg = replace(cfg, steps=ctx.steps)
    start = time.perf_counter()
    student = _student(ctx, cfg)
    target = copy.deepcopy(student).requires_grad_(False)
    grid = ConsistencyGrid(student.process, "uniform", 0.0, cfg.t_max, cfg.num_scales)
    loss = _loss_fn(ctx, cfg, student, target, grid)

    def update_target(_: int) -> None:
        ema_update_(target, student, cfg.target_ema)

    ema = fit(
        student,
        loss,
        cfg.steps,
        cfg.lr,
        ema=cfg.ema,
        lr_floor=cfg.lr_floor,
        after_step=update_target,
        log=ctx.log,
    )
    train_s = time.perf_counter() - start
    if cfg.mode == "cd":
        notes = f"CD, teacher init, {cfg.solver} teacher steps on N = {cfg.num_scales}"
    else:
        notes = f"CT from scratch (no teacher), N(k) curriculum to {cfg.num_scales}, pseudo-Huber"
    notes += f", EMA target {cfg.target_ema}; sampled from t = {cfg.t_max}, re-noise at 0.5"
    return TrajResult(method, ctx.seed, _generator(ema, cfg.t_max), train_s, cfg.steps, notes)
