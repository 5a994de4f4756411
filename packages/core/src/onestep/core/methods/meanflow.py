"""``MeanFlow``: one-step generation by average velocities (Geng et al. 2025) as a Lightning module.

The algorithm (MeanFlow, Alg. 1), rectified-flow times (``t = 0`` data, ``t = 1`` noise):

1. Draw data ``x``, noise ``e``, times ``r <= t`` (a fraction ``ratio`` with ``r < t``);
   ``z_t = (1 - t) x + t e``.
2. Instantaneous velocity ``v``: ``e - x`` (training from data, the paper's setting) or the
   frozen teacher's ``velocity(z_t, t)`` (distillation).
3. ``u, du/dt`` by one ``torch.func.jvp`` along ``(v, 0, 1)``; regress ``u`` on
   ``sg(v - (t - r) du/dt)`` with the adaptive weight ``1 / (||delta||^2 + c)^p``.

Sampling: ``z_0 = z_1 - u(z_1, 0, 1)`` (one NFE), or a few steps through intermediate times.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from torch import Tensor, nn

from onestep.core.ema import ema_update_
from onestep.core.methods.dm_export import export_student
from onestep.core.methods.dm_health import grad_norm
from onestep.core.methods.dm_random import GlobalBatchRNG
from onestep.core.methods.frozen_state import FrozenCheckpoint
from onestep.core.noise import append_dims
from onestep.core.objectives.meanflow import meanflow_loss, meanflow_target, meanflow_times
from onestep.core.testing import TwoTimeMLP

__all__ = ["AverageVelocity", "MeanFlow", "meanflow_generate", "meanflow_student_module"]

Batch = dict[str, Tensor]
VELOCITIES: tuple[str, ...] = ("data", "teacher")


class AverageVelocity(nn.Module):
    """``u(z, r, t)`` from a two-time network fed ``(t, t - r)`` (Geng et al. 2025, Table 1c).

    Args:
        net: ``net(z, t, t - r) -> [B, ...]``, e.g. :class:`~onestep.core.testing.TwoTimeMLP`.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, z: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """Average velocity ``[B, ...]`` over ``[r, t]``; ``z`` is the state at ``t``."""
        return self.net(z, t, t - r)


def meanflow_student_module(dim: int = 2, hidden: int = 64, seed: int = 0) -> AverageVelocity:
    """A tiny :class:`AverageVelocity` on a :class:`~onestep.core.testing.TwoTimeMLP` (for YAML).

    Args:
        dim: data dimension.
        hidden: hidden width.
        seed: initialisation seed.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return AverageVelocity(TwoTimeMLP(dim, hidden))


@torch.no_grad()
def meanflow_generate(u: nn.Module, eps: Tensor, times: list[float] | None = None) -> Tensor:
    """``z_r = z_t - (t - r) u(z_t, r, t)`` along ``times`` (default ``[1, 0]``: one NFE, eq. 12).

    Args:
        u: the average-velocity model ``u(z, r, t)``.
        eps: standard normal latents ``z_1``, ``[B, ...]``.
        times: decreasing times from 1 to 0; NFE = ``len(times) - 1``.
    """
    times = [1.0, 0.0] if times is None else times
    if len(times) < 2 or any(b >= a for a, b in itertools.pairwise(times)):
        raise ValueError(f"times must decrease and have >= 2 entries, got {times}")
    z, n = eps, eps.shape[0]
    for t_now, r_next in itertools.pairwise(times):
        t, r = torch.full((n,), t_now).to(eps), torch.full((n,), r_next).to(eps)
        z = z - append_dims(t - r, z.ndim) * u(z, r, t)
    return z


class MeanFlow(FrozenCheckpoint, L.LightningModule):
    """Train (or distill into) an average-velocity model ``u(z, r, t)``.

    Batches carry real samples ``x0`` (``NoiseDataModule(real=GMMData())`` for the toy ring).

    Args:
        student: ``u(z, r, t) -> [B, ...]``, e.g. :class:`AverageVelocity`.
        teacher: optional frozen Denoiser-like teacher with a rectified-flow process; its
            ``velocity(z_t, t)`` replaces ``e - x`` when ``velocity="teacher"``.
        velocity: ``data`` (``v = e - x``, the paper) or ``teacher`` (distillation).
        ratio: fraction of the batch with ``r != t`` (paper default 25%, Table 1a).
        p: adaptive-weight power (paper: 1).
        c: adaptive-weight constant (paper: 1e-3).
        time_mean: mean of the logit-normal time draws (paper: -0.4).
        time_std: std of the logit-normal time draws (paper: 1.0).
        lr: Adam learning rate.
        betas: Adam betas.
        ema_decay: decay of the EMA copy that is exported (0: no EMA, export the raw model).
        grad_clip: clip the gradient norm to this (``None``: no clipping).
        seed: seed of the per-step draws (times, noise), reseeded by ``(seed, global_step)``
            and sliced per rank (:class:`~onestep.core.methods.dm_random.GlobalBatchRNG`).
        export_path: if set, :meth:`export_student` writes here when training ends.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        velocity: str = "data",
        ratio: float = 0.25,
        p: float = 1.0,
        c: float = 1e-3,
        time_mean: float = -0.4,
        time_std: float = 1.0,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        ema_decay: float = 0.0,
        grad_clip: float | None = None,
        seed: int = 0,
        export_path: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["student", "teacher"])
        self.automatic_optimization = False
        if velocity not in VELOCITIES:
            raise ValueError(f"unknown velocity {velocity!r}; use one of {VELOCITIES}")
        if velocity == "teacher" and teacher is None:
            raise ValueError("velocity='teacher' needs a teacher (e.g. gmm_teacher_module)")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio (fraction with r != t) must lie in [0, 1], got {ratio}")
        self.student = student
        self.ema = copy.deepcopy(student).requires_grad_(False) if ema_decay > 0 else None
        # Frozen here, once: the teacher only supplies velocities (no grad, eval mode).
        self.teacher = None if teacher is None else teacher.requires_grad_(False).eval()
        self.rng = GlobalBatchRNG(seed)

    def train(self, mode: bool = True) -> MeanFlow:
        """Switch the student to ``mode``; teacher and EMA stay in eval mode."""
        super().train(mode)
        for frozen in (self.teacher, self.ema):
            if frozen is not None:
                frozen.eval()
        return self

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        """One MeanFlow update (Alg. 1), then the EMA."""
        self.rng.start(self, self.global_step)
        if "x0" not in batch:
            raise ValueError(
                "MeanFlow trains on data: batches need 'x0' (NoiseDataModule(real=...))"
            )
        x = batch["x0"]
        r, t, e = self.draws(x)
        z_t = (1 - append_dims(t, x.ndim)) * x + append_dims(t, x.ndim) * e
        v = self.velocity(x, e, z_t, t)
        u, u_tgt = meanflow_target(self.student, z_t, r, t, v)
        loss = meanflow_loss(u, u_tgt, self.hparams["p"], self.hparams["c"]).mean()
        opt: Any = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        gnorm = grad_norm(self.student.parameters(), self.hparams["grad_clip"])
        opt.step()
        if self.ema is not None:
            ema_update_(self.ema, self.student, self.hparams["ema_decay"])
        mse = (u - u_tgt).detach().square().flatten(1).sum(dim=1).mean()
        self.log_dict(
            {"loss/student": loss.detach(), "health/mse": mse, "grad_norm/student": gnorm},
            prog_bar=False,
        )

    def velocity(self, x: Tensor, e: Tensor, z_t: Tensor, t: Tensor) -> Tensor:
        """``e - x`` (data) or the teacher's probability-flow velocity at ``(z_t, t)``."""
        if self.hparams["velocity"] == "data":
            return e - x
        teacher = cast(Any, self.teacher)  # Denoiser-like, with .velocity(x_t, t)
        with torch.no_grad():
            return teacher.velocity(z_t, t.clamp(1e-4, 1 - 1e-4))

    def draws(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The step's random draws for data ``x`` ``[B, ...]``: times ``r, t`` and noise ``e``.

        All from :attr:`rng`, in this order: this rank's rows of global-batch draws.
        """
        r, t = self.sample_times(x.shape[0], x)
        return r, t, self.rng.randn(x.shape, x.device).to(x)

    def sample_times(self, n: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """Two logit-normal draws; ``r < t`` on a ``ratio`` fraction, else ``r = t``.

        Drawn from :attr:`rng` (this rank's rows of global-batch draws): ``sigmoid`` of
        ``N(time_mean, time_std)`` for both times, ``U[0, 1) < ratio`` for the mask.
        """
        hp = self.hparams
        a, b = (
            torch.sigmoid(hp["time_mean"] + hp["time_std"] * self.rng.randn((n,), like.device))
            for _ in range(2)
        )
        keep = self.rng.uniform(n, 0.0, 1.0, like.device) < hp["ratio"]
        r, t = meanflow_times(a, b, keep)
        return r.to(like.dtype), t.to(like.dtype)

    def configure_optimizers(self) -> Any:
        """Adam on the student only."""
        betas = tuple(self.hparams["betas"])
        return torch.optim.Adam(self.student.parameters(), lr=self.hparams["lr"], betas=betas)  # pyright: ignore[reportArgumentType]

    def export_student(self, path: str | Path) -> Path:
        """Write the EMA model (or the raw one without EMA) as safetensors."""
        return export_student(self.ema if self.ema is not None else self.student, path)

    def on_train_end(self) -> None:
        """Export to ``export_path`` (rank 0 only) when one is configured."""
        if self.hparams["export_path"] and self.trainer.is_global_zero:
            self.export_student(self.hparams["export_path"])
