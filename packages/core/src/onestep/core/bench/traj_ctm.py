"""2-D benchmark trainer of CTM (Kim et al. 2024) on the exact ring teacher.

The student ``G(x_t, t, s)`` (:class:`~onestep.core.methods.ctm.TrajectoryStudent` on a
:class:`TwoTimeNet`, flow prediction) is trained with CTM's soft consistency matching
(:mod:`onestep.core.objectives.ctm`): the student's jump ``t -> s`` against the EMA target's
jump ``u -> s`` from the teacher's ODE state at ``u``, both mapped to time 0 by the
stop-gradient student. The teacher's trajectories are solved once (DDIM on a uniform grid, the
exact ring teacher) and ``t, u, s`` are drawn on that grid, as CTM's solver walks its own grid.
Half of every batch uses the sampler's own time pairs (``1 -> 0``,
``1 -> 1/2``, ``1/2 -> 0``), the other half uniform ``s < t``. ``generate(eps, nfe)`` runs CTM's
deterministic (``gamma = 0``) jumps on a uniform grid, one network evaluation per jump.

Plain PyTorch loop (small nets: a framework's per-step overhead would dominate), EMA of the
student (which is also CTM's target network), cosine learning-rate decay.
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
from onestep.core.methods.ctm import TrajectoryStudent, ctm_generate
from onestep.core.noise import flow
from onestep.core.objectives.ctm import ctm_loss
from onestep.core.sampling import trajectory

__all__ = ["CTMBenchConfig", "TwoTimeNet", "ctm_batch_loss", "grid_times", "train_ctm"]


@dataclass(frozen=True)
class CTMBenchConfig:
    """Hyperparameters of one CTM run.

    Args:
        steps: student updates.
        batch_size: samples per update.
        hidden: hidden width of the net.
        depth: hidden layers of the net.
        lr: Adam learning rate (cosine-decayed to ``lr_floor * lr``).
        lr_floor: final learning-rate factor.
        ema: decay of the EMA student (the target network and the evaluated generator).
        trajectories: teacher ODE trajectories solved once before training.
        grid: DDIM steps of each trajectory (uniform in ``t``); ``t``, ``s``, ``u`` live on it,
            so ``Solver(x_t, t, u)`` is a look-up (CTM, sec. 4: the solver walks the grid).
        grid_frac: fraction of each batch on the sampler's own time pairs.
    """

    steps: int = 3000
    batch_size: int = 512
    hidden: int = 128
    depth: int = 3
    lr: float = 3e-3
    lr_floor: float = 0.02
    ema: float = 0.995
    trajectories: int = 16384
    grid: int = 32
    grid_frac: float = 0.5


class TwoTimeNet(nn.Module):
    """``net(x, t, s)`` for ``[B, D]`` data: an MLP on ``[x, features(t), features(s)]``.

    Args:
        dim: data dimension.
        hidden: hidden width.
        depth: hidden layers.
        time_embed: features per time (even); ``sin, cos`` at frequencies geometric in
            1..``max_freq``.
        max_freq: highest time frequency (low values keep ``d/dt`` of the net tame, which
            MeanFlow's target differentiates).
    """

    freqs: Tensor

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 128,
        depth: int = 3,
        time_embed: int = 16,
        max_freq: float = 100.0,
    ):
        super().__init__()
        self.register_buffer(
            "freqs", torch.exp(torch.linspace(0.0, math.log(max_freq), time_embed // 2))
        )
        layers: list[nn.Module] = [nn.Linear(dim + 2 * time_embed, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """Output ``[B, D]``; ``t``, ``s``: ``[B]``."""
        a, b = t.reshape(-1, 1) * self.freqs, s.reshape(-1, 1) * self.freqs
        return self.net(torch.cat([x, a.sin(), a.cos(), b.sin(), b.cos()], dim=1))


def grid_times(nfe: int) -> list[float]:
    """The sampler's uniform grid ``1, 1 - 1/nfe, ..., 0``."""
    return [1.0 - i / nfe for i in range(nfe + 1)]


def _indices(n: int, cfg: CTMBenchConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Grid indices ``(i_t, i_s, i_u)``, ``i_t < i_u <= i_s`` (index 0 is ``t = 1``).

    ``u`` is uniform on the grid in ``(s, t]`` reversed, i.e. ``u ~ U[s, t)`` (eq. 7); on
    ``grid_frac`` of the batch ``(t, s)`` is one of the sampler's pairs ``1 -> 0``,
    ``1 -> 1/2``, ``1/2 -> 0``.
    """
    k, half = cfg.grid, cfg.grid // 2
    i_t = (k * (1 - torch.rand(n).sqrt())).long().clamp(max=k - 1)  # more weight near t = 1
    i_s = i_t + 1 + (torch.rand(n) * (k - i_t)).long()
    pairs = torch.tensor([[0, k], [0, half], [half, k]])
    pick = pairs[torch.randint(0, len(pairs), (n,))]
    on_grid = torch.rand(n) < cfg.grid_frac
    i_t, i_s = torch.where(on_grid, pick[:, 0], i_t), torch.where(on_grid, pick[:, 1], i_s)
    i_u = i_t + 1 + (torch.rand(n) * (i_s - i_t)).long()
    return i_t, i_s, i_u.clamp(max=i_s)


def ctm_batch_loss(
    student: TrajectoryStudent,
    target: TrajectoryStudent,
    ts: Tensor,
    xs: Tensor,
    cfg: CTMBenchConfig,
) -> Tensor:
    """CTM's soft consistency matching on teacher trajectory states (the batch mean).

    Args:
        student: the trained CTM student.
        target: its EMA (CTM's target network ``theta^-``).
        ts: the trajectories' times ``[K + 1]``, from 1 down to 0.
        xs: their states ``[K + 1, N, ...]`` (any data rank); ``K = cfg.grid``.
        cfg: batch size, grid and the share of the sampler's own time pairs.
    """
    n = cfg.batch_size
    i_t, i_s, i_u = _indices(n, cfg)
    b = torch.randint(0, xs.shape[1], (n,))
    t, s, u = ts[i_t], ts[i_s], ts[i_u]
    x_t, x_u = xs[i_t, b], xs[i_u, b]  # x_u = Solver(x_t, t, u): the teacher's own ODE states
    x_est = student(x_t, t, s)
    frozen = {k: v.detach() for k, v in student.named_parameters()}
    zero = torch.zeros_like(s)
    with torch.no_grad():
        target_0 = torch.func.functional_call(student, frozen, (target(x_u, u, s), s, zero))
    pred_0 = torch.func.functional_call(student, frozen, (x_est, s, zero))
    return ctm_loss(pred_0, target_0, "l2").mean()


def _generator(model: TrajectoryStudent) -> Callable[[Tensor, int], Tensor]:
    def generate(eps: Tensor, nfe: int) -> Tensor:
        if nfe < 1:
            raise ValueError(f"nfe must be >= 1, got {nfe}")
        return ctm_generate(model, eps, grid_times(nfe), gamma=0.0)

    return generate


def train_ctm(
    method: str = "ctm",
    *,
    steps: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> TrajResult:
    """Train CTM on the exact ring teacher; ``steps=None`` uses the tuned default.

    Args:
        method: ``"ctm"``.
        steps: student updates (default :attr:`CTMBenchConfig.steps`).
        seed: seed of initialisation, data, noise and times.
        log: optional progress printer.
    """
    if method != "ctm":
        raise ValueError(f"unknown CTM bench method {method!r}; use 'ctm'")
    cfg = CTMBenchConfig() if steps is None else replace(CTMBenchConfig(), steps=steps)
    torch.manual_seed(seed)
    teacher = ring_teacher()[1]
    start = time.perf_counter()
    with torch.no_grad(), flush_denormals():
        ts, xs = trajectory(teacher, torch.randn(cfg.trajectories, 2), cfg.grid, solver="ddim")
    ts, xs = ts.float(), xs.float()
    student = TrajectoryStudent(TwoTimeNet(2, cfg.hidden, cfg.depth), flow(), "flow")
    target = copy.deepcopy(student).requires_grad_(False)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    sched = cosine_to_floor(opt, cfg.steps, cfg.lr_floor)
    with flush_denormals():
        for i in range(cfg.steps):
            loss = ctm_batch_loss(student, target, ts, xs, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ema_update_(
                target, student, min(cfg.ema, (1 + i) / (10 + i))
            )  # warm-up: short runs too
            if log is not None and i % 500 == 0:
                log(f"ctm step {i}: loss {loss.item():.5f}")
    notes = (
        f"teacher: {cfg.trajectories} DDIM-{cfg.grid} trajectories (solved once, in train_s); "
        f"gamma=0 jumps on a uniform grid; EMA {cfg.ema}"
    )
    return TrajResult(
        "ctm", seed, _generator(target), time.perf_counter() - start, cfg.steps, notes
    )
