"""``RectifiedFlow``: flow matching, reflow and one-step distillation (InstaFlow, KD) in one module.

Modes (the algorithm boxes of the papers, with the data they need):

* ``flow_matching`` (Liu et al. 2023, eq. 1; Lipman et al. 2023): batches ``{"z", "x0"}`` with
  independent noise and data (e.g. :class:`~onestep.core.data.noise.NoiseDataModule` with a
  ``real`` source); the student's velocity at ``x_t = (1 - t) x0 + t z`` regresses ``z - x0``.
* ``reflow`` (Liu et al. 2023, eq. 6; RF++, Lee et al. 2024): the same loss on teacher couplings
  ``(z, ODE(z))``: from :class:`~onestep.core.methods.rf_pairs.PairsDataModule`, or made on the
  fly from ``batch["z"]`` with the teacher's ODE when the batch has no ``x0``.
* ``distill`` (InstaFlow, Liu et al. 2024, eq. 4; Luhman & Luhman 2021): the student's one-step
  sample ``student(z, t=1)`` (for a ``flow``-prediction Denoiser, ``z - v(z, 1)``) regresses the
  coupling's ``x0``.

The teacher (optional for ``flow_matching`` / precomputed pairs) is frozen here, kept in eval
mode and dropped from checkpoints, as in :class:`DistributionMatching`. An EMA copy of the
student (``student_ema``) is what :meth:`sample` and :meth:`export_student` use.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from onestep.core import noise
from onestep.core.denoiser import Denoiser
from onestep.core.ema import ema_update_
from onestep.core.methods.dm_export import export_student
from onestep.core.methods.dm_health import grad_norm
from onestep.core.methods.dm_random import GlobalBatchRNG, micro_batch_iteration
from onestep.core.methods.frozen_state import FrozenCheckpoint
from onestep.core.objectives.distances import squared_l2
from onestep.core.objectives.flow_matching import (
    distillation_loss,
    flow_matching_loss,
    lpips_huber_loss,
    straight_interpolation,
)
from onestep.core.sampling import ode_pairs
from onestep.core.sampling import sample as ode_sample

__all__ = ["RF_MODES", "TIME_SAMPLERS", "RectifiedFlow"]

RF_MODES: tuple[str, ...] = ("flow_matching", "reflow", "distill")
TIME_SAMPLERS: tuple[str, ...] = ("uniform", "u_shaped", "logit_normal")

Batch = dict[str, Tensor]


def velocity(student: nn.Module, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
    """The student's ODE velocity ``dx_t / dt`` at ``(x_t, t)``.

    A ``flow``-prediction :class:`Denoiser` returns its raw output (exact at every ``t``);
    other Denoisers go through their ``x0`` (``(x_t - x0) / t`` for rectified flow, which blows
    up as ``t -> 0``: prefer ``flow`` students for flow matching).
    """
    if isinstance(student, Denoiser) and student.prediction == "flow":
        return student.raw(x_t, t, cond)
    return student.velocity(x_t, t, cond)  # pyright: ignore[reportCallIssue]


def euler_sample(student: nn.Module, z: Tensor, nfe: int, cond: Any = None) -> Tensor:
    """``nfe`` uniform Euler steps from ``x_1 = z`` to ``t = 0``: exactly ``nfe`` evaluations."""
    return ode_sample(student, z, nfe, solver="euler", cond=cond)  # pyright: ignore[reportArgumentType]


class RectifiedFlow(FrozenCheckpoint, L.LightningModule):
    """Train a rectified-flow student: flow matching, reflow, or one-step distillation.

    Args:
        student: Denoiser-like velocity model on the rectified-flow process (best: a
            ``Denoiser(net, flow(), "flow")``, whose raw output is the velocity).
        teacher: frozen Denoiser-like teacher; needed by ``reflow`` / ``distill`` when batches
            carry no ``x0`` (the pairs are then made on the fly).
        mode: ``flow_matching``, ``reflow`` or ``distill``.
        metric: ``l2`` or ``pseudo_huber`` (RF++).
        huber_c: pseudo-Huber scale (``None``: ``0.00054 sqrt(d)``).
        perceptual: optional distance module ``(a, b) -> [B]`` (e.g. LPIPS): in the flow modes
            the loss becomes RF++'s LPIPS-Huber (``metric`` is then unused); in ``distill`` it is
            added to ``metric``.
        time_sampler: ``uniform``, ``u_shaped`` (RF++) or ``logit_normal`` (SD3).
        u_shape_a: ``a`` of the U-shaped density.
        lr: Adam learning rate.
        betas: Adam betas.
        ema_decay: decay of the student's EMA.
        grad_clip: clip the gradient norm to this (``None``: no clipping).
        pair_steps: teacher solver steps for on-the-fly pairs.
        pair_solver: teacher solver for on-the-fly pairs.
        health_every: log ``health/*`` every this many steps (0: never).
        seed: seed of the per-step draws (training times), reseeded per micro-batch
            (:func:`~onestep.core.methods.dm_random.micro_batch_iteration`) and sliced per rank
            (:class:`~onestep.core.methods.dm_random.GlobalBatchRNG`).
        export_path: if set, :meth:`export_student` writes the EMA student here at the end.
    """

    frozen_modules = ("teacher", "perceptual")

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        mode: str = "flow_matching",
        metric: str = "l2",
        huber_c: float | None = None,
        perceptual: nn.Module | None = None,
        time_sampler: str = "uniform",
        u_shape_a: float = 4.0,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        ema_decay: float = 0.999,
        grad_clip: float | None = None,
        pair_steps: int = 32,
        pair_solver: str = "heun",
        health_every: int = 1,
        seed: int = 0,
        export_path: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["student", "teacher", "perceptual"])
        if mode not in RF_MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {RF_MODES}")
        if time_sampler not in TIME_SAMPLERS:
            raise ValueError(f"unknown time_sampler {time_sampler!r}; use one of {TIME_SAMPLERS}")
        if time_sampler == "u_shaped" and u_shape_a <= 0:
            raise ValueError(f"u_shaped needs u_shape_a > 0, got {u_shape_a}")
        process = getattr(student, "process", None)
        if not isinstance(process, noise.Flow):
            raise TypeError(
                f"RectifiedFlow needs a student on the rectified-flow process, got {process!r}; "
                "wrap its network in Denoiser(net, onestep.core.noise.flow(), 'flow')"
            )
        self.student = student
        # EMA weights: evaluated, exported; never trained by the optimizer.
        self.student_ema = copy.deepcopy(student).requires_grad_(False).eval()
        # Frozen here, once: the teacher only makes pairs and never trains.
        self.teacher = None if teacher is None else teacher.requires_grad_(False).eval()
        self.perceptual = None if perceptual is None else perceptual.requires_grad_(False)
        self.rng = GlobalBatchRNG(seed)

    def train(self, mode: bool = True) -> RectifiedFlow:
        """Switch the student to ``mode``; teacher and EMA stay in eval mode."""
        super().train(mode)
        self.student_ema.eval()
        if self.teacher is not None:
            self.teacher.eval()
        return self

    # -- the algorithm box ------------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """One update: pairs ``(z, x0)``, the mode's loss, EMA, logs."""
        self.rng.start(self, micro_batch_iteration(self, batch_idx))
        z, x0 = self.pairs(batch)
        cond = batch.get("cond")
        if self.hparams["mode"] == "distill":
            loss = self.distill_loss(z, x0, cond)
        else:
            loss = self.flow_loss(z, x0, cond)
        loss = loss.mean()
        logs = {"loss/student": loss.detach()}
        every = self.hparams["health_every"]
        if every and batch_idx % every == 0:
            logs |= self.health(z, x0, cond)
        self.log_dict(logs, prog_bar=False)
        return loss

    def pairs(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(z, x0)``: the batch's own, or ``z`` with the teacher's ODE sample (reflow / KD)."""
        z = batch["z"]
        if "x0" in batch:
            return z, batch["x0"]
        if self.hparams["mode"] == "flow_matching":
            raise ValueError(
                "mode='flow_matching' trains on data but the batch has no 'x0'; "
                "use NoiseDataModule(real=...) or a dataset yielding {'z', 'x0'}"
            )
        if self.teacher is None:
            raise ValueError(
                f"mode={self.hparams['mode']!r} got a batch without 'x0' and no teacher; "
                "pass teacher= (pairs made on the fly) or use PairsDataModule"
            )
        with torch.no_grad():
            _, x0 = ode_pairs(
                self.teacher,  # pyright: ignore[reportArgumentType]
                z,
                self.hparams["pair_steps"],
                solver=self.hparams["pair_solver"],
                cond=batch.get("cond"),
            )
        return z, x0

    # -- losses -----------------------------------------------------------------------------------

    def flow_loss(self, z: Tensor, x0: Tensor, cond: Any) -> Tensor:
        """Flow matching on the straight line ``x0 -> z`` at sampled ``t`` (per sample)."""
        hp = self.hparams
        t = self.sample_t(z.shape[0], z.device).to(z.dtype)
        v_pred = velocity(self.student, straight_interpolation(x0, z, t), t, cond)
        if self.perceptual is not None:
            return lpips_huber_loss(v_pred, x0, z, t, self.perceptual, hp["huber_c"])
        return flow_matching_loss(v_pred, x0, z, metric=hp["metric"], c=hp["huber_c"])

    def distill_loss(self, z: Tensor, x0: Tensor, cond: Any) -> Tensor:
        """One-step sample ``student(z, 1)`` against the coupling's ``x0`` (per sample)."""
        hp = self.hparams
        x_pred = self.student(z, torch.ones(z.shape[0], device=z.device, dtype=z.dtype), cond)
        return distillation_loss(
            x_pred, x0, metric=hp["metric"], c=hp["huber_c"], perceptual=self.perceptual
        )

    def sample_t(self, n: int, device: torch.device) -> Tensor:
        """Training times ``[n]`` from the configured sampler, drawn from :attr:`rng`.

        The same densities as :func:`~onestep.core.noise.uniform`,
        :func:`~onestep.core.noise.u_shaped` (inverse CDF of ``U[0, 1)``) and
        :func:`~onestep.core.noise.logit_normal` (``sigmoid`` of ``N(0, 1)``), but this rank's
        rows of a global-batch draw.
        """
        name = self.hparams["time_sampler"]
        if name == "logit_normal":
            return torch.sigmoid(self.rng.randn((n,), device))
        u = self.rng.uniform(n, 0.0, 1.0, device)
        if name == "u_shaped":
            a = float(self.hparams["u_shape_a"])
            return 0.5 + torch.asinh((2 * u - 1) * math.sinh(a / 2)) / a
        return u

    # -- after the update -------------------------------------------------------------------------

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Log (and clip) the student's gradient norm."""
        norm = grad_norm(self.student.parameters(), self.hparams["grad_clip"])
        self.log("grad_norm/student", norm)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """EMA update of the student."""
        ema_update_(self.student_ema, self.student, self.hparams["ema_decay"])

    def health(self, z: Tensor, x0: Tensor, cond: Any) -> Batch:
        """``health/one_step_error``: mean squared error of the student's 1-NFE sample vs ``x0``.

        For reflow and distill it falls as the flow straightens (a straight flow's one Euler step
        lands on its coupling); for flow matching it stays large (independent pairs).
        """
        with torch.no_grad():
            x1 = euler_sample(self.student, z, 1, cond)
        return {"health/one_step_error": squared_l2(x1, x0).mean()}

    def sample(self, z: Tensor, nfe: int = 1, cond: Any = None, ema: bool = True) -> Tensor:
        """``nfe`` Euler steps from ``z`` at ``t = 1`` (the distilled student: ``nfe = 1``)."""
        with torch.no_grad():
            return euler_sample(self.student_ema if ema else self.student, z, nfe, cond)

    # -- optimizers, checkpoints, export ----------------------------------------------------------

    def configure_optimizers(self) -> Any:
        """Adam on the student."""
        betas = tuple(self.hparams["betas"])
        return torch.optim.Adam(self.student.parameters(), lr=self.hparams["lr"], betas=betas)  # pyright: ignore[reportArgumentType]

    def export_student(self, path: str | Path, **diffusers_kwargs: Any) -> Path:
        """Write the EMA student (safetensors, or a diffusers folder for a diffusers student)."""
        return export_student(self.student_ema, path, **diffusers_kwargs)

    def on_train_end(self) -> None:
        """Export to ``export_path`` (rank 0 only) when one is configured."""
        if self.hparams["export_path"] and self.trainer.is_global_zero:
            self.export_student(self.hparams["export_path"])
