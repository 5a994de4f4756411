"""2-D benchmark trainer of MeanFlow (Geng et al. 2025) on the 8-mode ring.

The average velocity ``u(z, r, t) = net(z, t, t - r)`` (:class:`~.traj_ctm.TwoTimeNet`) is
regressed on the MeanFlow identity target
(:func:`~onestep.core.objectives.meanflow.meanflow_target`, one ``torch.func.jvp``) with the
adaptive weight ``1 / (||delta||^2 + c)^p``. Two velocity sources:

* ``meanflow-data``: ``v = e - x`` on ring samples (the paper's setting, no teacher);
* ``meanflow-distill``: ``v`` = the exact ring teacher's velocity at ``(z_t, t)`` (the
  conditional expectation of ``e - x``: same fixed point, lower-variance target);
* ``meanflow``: the better of the two on this benchmark (:data:`MEANFLOW_DEFAULT`).

``generate(eps, nfe)``: ``z_r = z_t - (t - r) u(z_t, r, t)`` on a uniform grid from 1 to 0.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from onestep.core.bench.gmm_train import flush_denormals
from onestep.core.bench.schedule import cosine_to_floor
from onestep.core.bench.traj_common import TrajResult, ring_teacher
from onestep.core.bench.traj_ctm import TwoTimeNet, grid_times
from onestep.core.data.gmm import GMMDenoiser
from onestep.core.ema import ema_update_
from onestep.core.methods.meanflow import AverageVelocity, meanflow_generate
from onestep.core.noise import logit_normal
from onestep.core.objectives.meanflow import meanflow_loss, meanflow_target, meanflow_times

__all__ = ["MEANFLOW_DEFAULT", "MEANFLOW_METHODS", "MeanFlowBenchConfig", "train_meanflow"]

MEANFLOW_METHODS: tuple[str, ...] = ("meanflow", "meanflow-data", "meanflow-distill")
MEANFLOW_DEFAULT = "meanflow-data"


@dataclass(frozen=True)
class MeanFlowBenchConfig:
    """Hyperparameters of one MeanFlow run.

    Args:
        steps: updates.
        batch_size: samples per update.
        hidden: hidden width of the net.
        depth: hidden layers of the net.
        lr: Adam learning rate (cosine-decayed to ``lr_floor * lr``).
        lr_floor: final learning-rate factor.
        ema: EMA decay of the evaluated model.
        ratio: fraction of the batch with ``r != t`` (paper: 0.25 on ImageNet; more helps
            the one-step jump on this toy).
        grid_frac: fraction of the batch on the sampler's own ``(r, t)`` pairs.
        p: adaptive-weight power (the paper's 1.0 trained slower and less stably here; 0.5 is
            its pseudo-Huber-like setting).
        c: adaptive-weight constant.
        time_mean: logit-normal mean of the time draws.
        time_std: logit-normal std of the time draws.
        max_freq: highest frequency of the net's time features. Low on purpose: the identity
            target differentiates the net in ``t``, so fast time features make ``du/dt`` (and
            the target) rough. Measured on the ring, ``meanflow-data``, 3,000 updates, energy /
            teacher 4-step at 1 NFE: max_freq 8: 7.9x (seed 0; 8.2x over 3 seeds, 7/8 modes);
            2: 0.28 / 0.48 / 0.47 (seeds 0/1/2); 1: 0.44 / 0.37 / 0.33, all 8/8 modes.
    """

    steps: int = 3000
    batch_size: int = 512
    hidden: int = 128
    depth: int = 3
    lr: float = 2e-3
    lr_floor: float = 0.02
    ema: float = 0.995
    ratio: float = 0.75
    grid_frac: float = 0.5
    p: float = 0.5
    c: float = 1e-3
    time_mean: float = -0.4
    time_std: float = 1.0
    max_freq: float = 2.0


def _times(n: int, cfg: MeanFlowBenchConfig) -> tuple[Tensor, Tensor]:
    """Logit-normal ``(r, t)`` with ``r < t`` on ``ratio`` of the batch; some sampler pairs."""
    a, b = (logit_normal(n, mean=cfg.time_mean, std=cfg.time_std) for _ in range(2))
    r, t = meanflow_times(a, b, torch.rand(n) < cfg.ratio)
    pairs = torch.tensor([[0.0, 1.0], [0.5, 1.0], [0.0, 0.5]])
    on_grid = torch.rand(n) < cfg.grid_frac
    pick = pairs[torch.randint(0, len(pairs), (n,))]
    return torch.where(on_grid, pick[:, 0], r), torch.where(on_grid, pick[:, 1], t)


def _step_loss(
    model: nn.Module, teacher: GMMDenoiser, distill: bool, cfg: MeanFlowBenchConfig
) -> Tensor:
    """The adaptively weighted MeanFlow loss on fresh ring samples (the batch mean)."""
    n = cfg.batch_size
    r, t = _times(n, cfg)
    x, e = teacher.mixture.sample(n), torch.randn(n, 2)
    z_t = (1 - t[:, None]) * x + t[:, None] * e
    if distill:
        with torch.no_grad():
            v = teacher.velocity(z_t, t.clamp(1e-4, 1.0))
    else:
        v = e - x
    u, u_tgt = meanflow_target(model, z_t, r, t, v)
    return meanflow_loss(u, u_tgt, cfg.p, cfg.c).mean()


def _generator(model: nn.Module) -> Callable[[Tensor, int], Tensor]:
    def generate(eps: Tensor, nfe: int) -> Tensor:
        if nfe < 1:
            raise ValueError(f"nfe must be >= 1, got {nfe}")
        return meanflow_generate(model, eps, grid_times(nfe))

    return generate


def train_meanflow(
    method: str = "meanflow",
    *,
    steps: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> TrajResult:
    """Train MeanFlow on the ring; ``steps=None`` uses the tuned default.

    Args:
        method: ``"meanflow-data"`` (``v = e - x``), ``"meanflow-distill"`` (teacher velocity)
            or ``"meanflow"`` (:data:`MEANFLOW_DEFAULT`).
        steps: updates (default :attr:`MeanFlowBenchConfig.steps`).
        seed: seed of initialisation, data, noise and times.
        log: optional progress printer.
    """
    if method not in MEANFLOW_METHODS:
        raise ValueError(f"unknown MeanFlow bench method {method!r}; use one of {MEANFLOW_METHODS}")
    variant = MEANFLOW_DEFAULT if method == "meanflow" else method
    cfg = MeanFlowBenchConfig() if steps is None else replace(MeanFlowBenchConfig(), steps=steps)
    torch.manual_seed(seed)
    teacher = ring_teacher()[1]
    model = AverageVelocity(TwoTimeNet(2, cfg.hidden, cfg.depth, max_freq=cfg.max_freq))
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = cosine_to_floor(opt, cfg.steps, cfg.lr_floor)
    start = time.perf_counter()
    with flush_denormals():
        for i in range(cfg.steps):
            loss = _step_loss(model, teacher, variant == "meanflow-distill", cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ema_update_(ema, model, min(cfg.ema, (1 + i) / (10 + i)))  # warm-up: short runs too
            if log is not None and i % 500 == 0:
                log(f"{method} step {i}: loss {loss.item():.5f}")
    source = "exact teacher velocity" if variant == "meanflow-distill" else "v = e - x from data"
    notes = f"{variant}: {source}; r != t on {cfg.ratio:.0%}; p = {cfg.p}; EMA {cfg.ema}"
    return TrajResult(method, seed, _generator(ema), time.perf_counter() - start, cfg.steps, notes)
