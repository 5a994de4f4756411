"""2-D benchmark trainer of the consistency family: CD, CT (iCT-style) and Hyper-SD's TSCD.

The student is a :class:`~onestep.core.methods.consistency_function.ConsistencyFunction` around a
small time-conditioned MLP (``x0`` prediction) under rectified flow, trained against the exact
8-mode ring teacher (CD, TSCD) or on true mixture samples alone (CT). The loop is plain PyTorch
(the networks are so small that a framework's per-step overhead would dominate); the losses are
the library's (:mod:`onestep.core.objectives.consistency`). ``generate(eps, nfe)`` is multi-step
consistency sampling (denoise, re-noise) from an EMA of the student, one evaluation per step.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from onestep.core.bench.gmm_train import flush_denormals
from onestep.core.bench.schedule import cosine_to_floor
from onestep.core.bench.traj_common import TrajResult, ring_teacher
from onestep.core.denoiser import Denoiser
from onestep.core.ema import ema_update_
from onestep.core.methods.consistency_function import ConsistencyFunction, consistency_sample
from onestep.core.methods.consistency_grid import ConsistencyGrid
from onestep.core.objectives import consistency as cm
from onestep.core.sampling.step import ode_step

__all__ = ["DEFAULTS", "ConsistencyBenchConfig", "TimeMLP", "train_consistency"]


class TimeMLP(nn.Module):
    """``net(x, t)``: an MLP on ``[x, sin(f t), cos(f t)]`` with ``depth`` hidden layers.

    Args:
        dim: data dimension.
        hidden: hidden width.
        depth: number of hidden layers.
        time_embed: number of time features (even); frequencies from 1 to 100, geometric.
    """

    freqs: Tensor

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, time_embed: int = 16):
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(100), time_embed // 2)))
        layers: list[nn.Module] = [nn.Linear(dim + time_embed, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``[B, D]`` from ``x`` ``[B, D]`` and ``t`` ``[B]``."""
        angle = t.reshape(-1, 1) * self.freqs
        return self.net(torch.cat([x, torch.sin(angle), torch.cos(angle)], dim=1))


@dataclass(frozen=True)
class ConsistencyBenchConfig:
    """Hyperparameters of one consistency run on the ring.

    Args:
        mode: ``cd`` (teacher ODE step) or ``ct`` (shared ``(x0, eps)``, no teacher).
        steps: optimiser updates.
        batch_size: samples per update.
        hidden: MLP width.
        depth: MLP hidden layers.
        lr: Adam learning rate (cosine-decayed to 5% of it).
        num_scales: grid intervals ``N`` (CD); with ``curriculum`` the final ``N``.
        curriculum: iCT's doubling ``N(k)`` from ``s0`` to ``num_scales`` (CT).
        s0: first ``N`` of the curriculum.
        grid: ``uniform`` (CD) or ``karras`` (iCT sigmas mapped to ``t``).
        solver: teacher step, ``ddim`` or ``heun``.
        t_max: top of the grid (Heun on rectified flow needs ``alpha > 0``: below 1).
        target_ema: EMA of the target network (0: stop-gradient, iCT).
        eval_ema: EMA of the weights that ``generate`` uses.
        distance: ``l2`` or ``pseudo_huber``.
        huber_c: pseudo-Huber ``c``.
        weighting: ``uniform`` or ``ict``.
        sigma_data: ``sigma_d`` of the scalings.
        p_mean: iCT's lognormal mean of ``ln sigma`` (karras grid).
        p_std: iCT's lognormal std of ``ln sigma``.
        segments: TSCD segments (1: plain consistency).
        progressive: Hyper-SD's ``8 -> 4 -> 2 -> 1`` segment schedule.
        renoise_times: re-noising times after the first step, one tuple per supported nfe
            (``nfe - 1`` times each).
    """

    mode: str = "cd"
    steps: int = 4000
    batch_size: int = 256
    hidden: int = 128
    depth: int = 3
    lr: float = 2e-3
    num_scales: int = 32
    curriculum: bool = False
    s0: int = 8
    grid: str = "uniform"
    solver: str = "heun"
    t_max: float = 0.995
    target_ema: float = 0.95
    eval_ema: float = 0.995
    distance: str = "l2"
    huber_c: float = 0.03
    weighting: str = "uniform"
    sigma_data: float = 1.0
    p_mean: float = -1.1
    p_std: float = 2.0
    segments: int = 1
    progressive: bool = False
    renoise_times: tuple[tuple[float, ...], ...] = ((), (0.5,), (0.7, 0.5, 0.3))


DEFAULTS: dict[str, ConsistencyBenchConfig] = {
    "cd": ConsistencyBenchConfig(),
    # iCT's N(k) curriculum and pseudo-Huber on a uniform t grid, with CT's EMA target: iCT's
    # stop-gradient target was 2x worse here at this budget; CT's noisier target wants width.
    "ct": ConsistencyBenchConfig(
        mode="ct",
        steps=6000,
        hidden=256,
        curriculum=True,
        num_scales=256,
        target_ema=0.95,
        distance="pseudo_huber",
    ),
    "tscd": ConsistencyBenchConfig(progressive=True),
}


def _times(cfg: ConsistencyBenchConfig, nfe: int, t_top: float) -> list[float]:
    """``nfe`` sampling times: the grid's top ``t_top`` and the configured re-noising times."""
    for mids in cfg.renoise_times:
        if len(mids) == nfe - 1:
            return [t_top, *mids]
    known = sorted(len(m) + 1 for m in cfg.renoise_times)
    raise ValueError(f"no sampling times for nfe={nfe}; this run supports nfe in {known}")


class _Run:
    """State of one run: student, target, evaluated EMA, grid and random source."""

    def __init__(self, cfg: ConsistencyBenchConfig, seed: int):
        self.cfg = cfg
        self.mixture, self.teacher = ring_teacher()
        self.process = self.teacher.process
        torch.manual_seed(seed)
        net = TimeMLP(2, cfg.hidden, cfg.depth)
        self.student = ConsistencyFunction(Denoiser(net, self.process, "x0"), cfg.sigma_data)
        self.target = copy.deepcopy(self.student).requires_grad_(False)
        self.ema = copy.deepcopy(self.student).requires_grad_(False)
        self.grid = ConsistencyGrid(self.process, cfg.grid, 0.0, cfg.t_max, cfg.num_scales)
        self.gen = torch.Generator().manual_seed(seed)
        self.opt = torch.optim.Adam(self.student.parameters(), lr=cfg.lr)
        self.sched = cosine_to_floor(self.opt, cfg.steps, 0.05)

    def draw(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``x0``, ``eps`` and ``(t_cur, t_next)`` for step ``k``."""
        cfg, b = self.cfg, self.cfg.batch_size
        if cfg.curriculum:
            size = cm.ict_num_scales(k, cfg.steps, cfg.s0, cfg.num_scales)
            self.grid.resize(size - 1)
        if cfg.grid == "karras":
            probs = cm.ict_time_probs(self.grid.levels().clamp_min(1e-4), cfg.p_mean, cfg.p_std)
            idx = torch.multinomial(probs, b, replacement=True, generator=self.gen)
        else:
            idx = torch.randint(self.grid.num_scales, (b,), generator=self.gen)
        x0 = self.mixture.sample(b, self.gen)
        eps = torch.randn(b, 2, generator=self.gen)
        return (x0, eps, *self.grid.pair(idx))

    def step(self, k: int) -> float:
        """One consistency update and the EMA updates; returns the loss."""
        cfg = self.cfg
        x0, eps, t_cur, t_next = self.draw(k)
        x_next = self.process.add_noise(x0, eps, t_next)
        with torch.no_grad():
            if cfg.mode == "ct":
                x_cur = self.process.add_noise(x0, eps, t_cur)
            else:
                x_cur = ode_step(self.teacher, x_next, t_next, t_cur, cfg.solver)
        target = self.student if cfg.target_ema == 0 else self.target
        segments = cm.segment_schedule(k, cfg.steps) if cfg.progressive else cfg.segments
        if segments == 1:
            online = self.student(x_next, t_next)
            with torch.no_grad():
                f_target = target(x_cur, t_cur)
        else:
            edge = cm.segment_lower_edge(t_next, segments)
            online = ode_step(self.student, x_next, t_next, edge)
            with torch.no_grad():
                f_target = ode_step(target, x_cur, torch.maximum(t_cur, edge), edge)
        weight = None
        if cfg.weighting == "ict":
            weight = cm.ict_weight(self.grid.level(t_next), self.grid.level(t_cur))
        loss = cm.consistency_loss(online, f_target, weight, cfg.distance, cfg.huber_c).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        if cfg.target_ema > 0:
            ema_update_(self.target, self.student, cfg.target_ema)
        ema_update_(self.ema, self.student, cfg.eval_ema)
        return float(loss.detach())

    def generator(self) -> Callable[[Tensor, int], Tensor]:
        """``(eps, nfe) -> x`` from the evaluated EMA, re-noising from a fixed seed."""
        f = self.ema
        t_top = float(self.grid.times()[-1])  # the highest time trained (Karras: sigma 80)

        @torch.no_grad()
        def generate(eps: Tensor, nfe: int) -> Tensor:
            with flush_denormals():
                gen = torch.Generator().manual_seed(1234)
                return consistency_sample(f, eps, _times(self.cfg, nfe, t_top), generator=gen)

        return generate


def train_consistency(
    method: str,
    *,
    steps: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    config: ConsistencyBenchConfig | None = None,
) -> TrajResult:
    """Train one consistency-family generator on the ring.

    Args:
        method: ``cd``, ``ct`` or ``tscd`` (a key of :data:`DEFAULTS`).
        steps: optimiser updates (``None``: the tuned default).
        seed: initialisation and data seed.
        log: called with a progress line now and then.
        config: overrides the method's default configuration.

    Returns:
        A :class:`~onestep.core.bench.traj_common.TrajResult`; ``generate`` takes nfe 1 to 4.
    """
    if method not in DEFAULTS:
        raise ValueError(f"unknown consistency method {method!r}; use one of {sorted(DEFAULTS)}")
    cfg = config or DEFAULTS[method]
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    start = time.perf_counter()
    with flush_denormals():
        run = _Run(cfg, seed)
        for k in range(cfg.steps):
            loss = run.step(k)
            if log is not None and (k % 1000 == 0 or k == cfg.steps - 1):
                log(f"{method} step {k}: loss {loss:.5f}, N {run.grid.num_scales}")
    if cfg.mode == "ct":
        notes = f"CT on true samples (no teacher), N(k) curriculum to {cfg.num_scales}, EMA target"
    else:
        notes = f"CD from the exact rectified-flow teacher, {cfg.solver} steps, N {cfg.num_scales}"
    if cfg.progressive or cfg.segments > 1:
        notes += ", TSCD segments 8-4-2-1" if cfg.progressive else f", {cfg.segments} segments"
    return TrajResult(method, seed, run.generator(), time.perf_counter() - start, cfg.steps, notes)
