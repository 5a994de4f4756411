"""2-D benchmark trainer of the rectified-flow family: reflow, reflow + distill (InstaFlow), KD.

All three start from the same couplings: ``(z, x = ODE_teacher(z))`` from a many-step Heun solve
of the exact ring teacher (:func:`~onestep.core.bench.traj_common.ring_teacher`).

* ``reflow``: a velocity net ``v(x_t, t)`` trained by flow matching on the straight line between
  each pair (Liu et al. 2023, eq. 6), RF++ style (U-shaped ``t``, Lee et al. 2024); sampled with
  ``nfe`` Euler steps.
* ``reflow+distill``: InstaFlow (Liu et al. 2024): the reflowed net, then a copy of it distilled
  into one step ``G(z) = z - v_G(z, 1)`` on the reflowed net's own ODE samples. ``nfe = 2``:
  ``G`` then one Euler step of the reflowed net from ``t = 1/2`` (at ``x = (G(z) + z) / 2``).
* ``kd``: Luhman & Luhman 2021: ``G(x_t, t) = x_t - t u(x_t, t)`` regressed on the teacher's ODE
  sample, at ``t = 1`` (from the noise itself: plain KD) and, so that it can be re-applied, at
  ``t`` in ``{1/2, 1/4, 3/4}`` on the pair's straight line. ``nfe = n`` (1, 2 or 4): ``G(z, 1)``,
  then ``G`` again at ``t = 1 - k / n`` from ``(1 - t) G + t z`` (multistep-consistency style).

Plain PyTorch loops (small nets: a framework's per-step overhead would dominate), EMA of every
trained net, cosine learning-rate decay.
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
from onestep.core.ema import ema_update_
from onestep.core.noise import u_shaped
from onestep.core.objectives.flow_matching import (
    distillation_loss,
    flow_matching_loss,
    straight_interpolation,
)
from onestep.core.sampling import ode_pairs

__all__ = [
    "FLOW_METHODS",
    "FlowBenchConfig",
    "VelocityMLP",
    "euler",
    "flow_generator",
    "train_flow",
]

FLOW_METHODS: tuple[str, ...] = ("reflow", "reflow+distill", "kd")
# KD's training times and their probabilities: t = 1 is the one-step map.
KD_TIMES: tuple[float, ...] = (1.0, 0.5, 0.75, 0.25)
KD_PROBS: tuple[float, ...] = (0.5, 0.25, 0.125, 0.125)
# Tuned main-stage updates per method (reflow's 1-NFE sample gains most from longer training).
DEFAULT_STEPS = {"reflow": 3000, "reflow+distill": 2000, "kd": 2000}
_NOTES = {
    "reflow": "Euler with nfe steps",
    "reflow+distill": "nfe=2: distilled G, then one Euler step of the reflowed net from t=1/2",
    "kd": "nfe>1: G re-applied at t=1-k/nfe on (1-t) G + t z (trained at t=1, 1/2, 1/4, 3/4)",
}


@dataclass(frozen=True)
class FlowBenchConfig:
    """Hyperparameters of one run.

    Args:
        pairs: number of teacher couplings ``(z, ODE(z))``.
        pair_steps: Heun steps of the teacher's ODE solve.
        hidden: hidden width of the nets.
        depth: hidden layers of the nets.
        batch_size: pairs per update.
        lr: Adam learning rate (cosine-decayed to ``lr_floor * lr``).
        lr_floor: final learning-rate factor.
        steps: updates of the main stage (reflow, or KD); ``None``: :data:`DEFAULT_STEPS`.
        distill_steps: updates of InstaFlow's distillation stage.
        distill_ode_steps: Euler steps of the reflowed net's ODE that make the distill targets.
        ema: EMA decay of every trained net.
        u_shape: ``a`` of the U-shaped time density (RF++); 0 draws ``t`` uniformly.
    """

    pairs: int = 32768
    pair_steps: int = 64
    hidden: int = 256
    depth: int = 3
    batch_size: int = 512
    lr: float = 2e-3
    lr_floor: float = 0.02
    steps: int | None = None
    distill_steps: int = 1000
    distill_ode_steps: int = 16
    ema: float = 0.995
    u_shape: float = 4.0


class VelocityMLP(nn.Module):
    """``u(x, t)`` for ``[B, D]`` data: an MLP on ``[x, sin(f t), cos(f t)]``.

    Args:
        dim: data dimension.
        hidden: hidden width.
        depth: hidden layers.
        time_embed: number of time features (even); frequencies ``f`` geometric in 1..100.
    """

    freqs: Tensor

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 3, time_embed: int = 16):
        super().__init__()
        self.register_buffer(
            "freqs", torch.exp(torch.linspace(0.0, math.log(100.0), time_embed // 2))
        )
        layers: list[nn.Module] = [nn.Linear(dim + time_embed, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Velocity ``[B, D]`` at ``x`` ``[B, D]``, times ``t`` ``[B]``."""
        angle = t.reshape(-1, 1) * self.freqs
        return self.net(torch.cat([x, angle.sin(), angle.cos()], dim=1))


def euler(v: nn.Module, z: Tensor, nfe: int) -> Tensor:
    """``nfe`` uniform Euler steps of ``dx/dt = v(x, t)`` from ``t = 1`` to 0."""
    x = z
    for i in range(nfe):
        t = torch.full((z.shape[0],), 1.0 - i / nfe)
        x = x - v(x, t) / nfe
    return x


def _main_steps(cfg: FlowBenchConfig) -> int:
    if cfg.steps is None or cfg.steps < 1:
        raise ValueError(f"steps must be a positive int here, got {cfg.steps}")
    return cfg.steps


def _fit(
    net: nn.Module, loss_fn: Callable[[Tensor], Tensor], steps: int, cfg: FlowBenchConfig
) -> nn.Module:
    """Adam on ``loss_fn(batch_indices)`` for ``steps`` updates; returns the EMA of ``net``."""
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    floor = cfg.lr_floor
    sched = cosine_to_floor(opt, steps, floor)
    for _ in range(steps):
        idx = torch.randint(0, cfg.pairs, (cfg.batch_size,))
        loss = loss_fn(idx).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema_update_(ema, net, cfg.ema)
    return ema


def _reflow(z: Tensor, x: Tensor, cfg: FlowBenchConfig) -> nn.Module:
    net = VelocityMLP(2, cfg.hidden, cfg.depth)

    def loss(idx: Tensor) -> Tensor:
        n = idx.shape[0]
        t = u_shaped(n, a=cfg.u_shape) if cfg.u_shape > 0 else torch.rand(n)
        x_t = straight_interpolation(x[idx], z[idx], t)
        return flow_matching_loss(net(x_t, t), x[idx], z[idx])

    return _fit(net, loss, _main_steps(cfg), cfg)


def _distill(v: nn.Module, cfg: FlowBenchConfig) -> nn.Module:
    """InstaFlow's stage 2: ``G(z) = z - u(z, 1)`` from a copy of ``v`` on ``v``'s ODE samples."""
    z = torch.randn(cfg.pairs, 2)
    with torch.no_grad():
        target = euler(v, z, cfg.distill_ode_steps)
    student = copy.deepcopy(v).requires_grad_(True)
    ones = torch.ones(cfg.batch_size)

    def loss(idx: Tensor) -> Tensor:
        return distillation_loss(z[idx] - student(z[idx], ones), target[idx])

    return _fit(student, loss, cfg.distill_steps, cfg)


def _kd(z: Tensor, x: Tensor, cfg: FlowBenchConfig) -> nn.Module:
    """``G(x_t, t) = x_t - t u(x_t, t)`` regressed on the coupling's ``x`` (Luhman & Luhman).

    ``t = 1`` (``x_t = z``) is plain KD; the other times of :data:`KD_TIMES` sit on the pair's
    straight line, where 2- and 4-NFE sampling re-applies ``G``.
    """
    net = VelocityMLP(2, cfg.hidden, cfg.depth)
    times, probs = torch.tensor(KD_TIMES), torch.tensor(KD_PROBS)

    def loss(idx: Tensor) -> Tensor:
        t = times[torch.multinomial(probs, idx.shape[0], replacement=True)]
        x_t = straight_interpolation(x[idx], z[idx], t)
        return distillation_loss(x_t - t[:, None] * net(x_t, t), x[idx])

    return _fit(net, loss, _main_steps(cfg), cfg)


def _teacher_pairs(cfg: FlowBenchConfig) -> tuple[Tensor, Tensor]:
    """``(z, ODE_teacher(z))`` from a ``pair_steps``-step Heun solve of the exact teacher."""
    _, teacher = ring_teacher()
    z = torch.randn(cfg.pairs, 2)
    with torch.no_grad():
        _, x = ode_pairs(teacher, z, cfg.pair_steps, solver="heun")
    return z, x.float()


def flow_generator(method: str, nets: dict[str, nn.Module]) -> Callable[[Tensor, int], Tensor]:
    """``(eps, nfe) -> x`` of ``method`` (module docstring) from velocity nets ``u(x, t)``.

    ``nets["v"]``: the (reflowed) velocity; ``nets["g"]``: the one-step net, ``G = x - t g``.
    Rank-agnostic: ``eps`` is ``[B, ...]``, ``t`` is passed as ``[B]``.
    """

    def generate(eps: Tensor, nfe: int) -> Tensor:
        if nfe < 1:
            raise ValueError(f"nfe must be >= 1, got {nfe}")
        with torch.no_grad():
            if method == "reflow":
                return euler(nets["v"], eps, nfe)
            one = torch.ones(eps.shape[0])
            g = nets["g"]
            x0 = eps - g(eps, one)
            for i in range(1, nfe):
                t = 1.0 - i / nfe
                x_t = (1 - t) * x0 + t * eps
                net = nets["v"] if method == "reflow+distill" else g
                x0 = x_t - t * net(x_t, torch.full_like(one, t))
            return x0

    return generate


def train_flow(
    method: str,
    *,
    steps: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    config: FlowBenchConfig | None = None,
) -> TrajResult:
    """Train one rectified-flow-family generator on the 8-mode ring; see the module docstring.

    Args:
        method: ``reflow``, ``reflow+distill`` or ``kd``.
        steps: updates of the main stage (``None``: the tuned default); the distillation stage
            of ``reflow+distill`` takes half as many.
        seed: seed of the couplings, initialisation and batches.
        log: progress output (e.g. ``print``).
        config: override the tuned hyperparameters.

    Returns:
        A :class:`TrajResult` whose ``generate(eps, nfe)`` uses exactly ``nfe`` evaluations.
    """
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {FLOW_METHODS}")
    cfg = config or FlowBenchConfig()
    if steps is not None:
        cfg = replace(cfg, steps=steps, distill_steps=max(1, steps // 2))
    elif cfg.steps is None:
        cfg = replace(cfg, steps=DEFAULT_STEPS[method])
    say = log or (lambda _msg: None)
    torch.manual_seed(seed)
    with flush_denormals():
        start = time.perf_counter()
        z, x = _teacher_pairs(cfg)
        say(f"{method}: {cfg.pairs} teacher pairs in {time.perf_counter() - start:.1f}s")
        nets: dict[str, nn.Module] = {}
        if method == "kd":
            nets["g"] = _kd(z, x, cfg)
        else:
            nets["v"] = _reflow(z, x, cfg)
            if method == "reflow+distill":
                nets["g"] = _distill(nets["v"], cfg)
        train_s = time.perf_counter() - start
    say(f"{method}: trained in {train_s:.1f}s")
    total = _main_steps(cfg) + (cfg.distill_steps if method == "reflow+distill" else 0)
    notes = f"teacher pairs: {cfg.pair_steps}-step Heun; {_NOTES[method]}"
    return TrajResult(method, seed, flow_generator(method, nets), train_s, total, notes)
