"""``ContinuousConsistency``: continuous-time consistency distillation / training (sCM).

One step (Lu & Song 2024, sec. 4, Alg. 1 / 2):

1. Draw ``tau = arctan(e^{log_sigma} / sigma_d)``, ``log_sigma ~ N(P_mean, P_std^2)``, and
   ``x_tau = cos(tau) x0 + sin(tau) z`` from real ``x0`` (``batch["x0"]``) and
   ``z = sigma_d batch["z"]``.
2. ``dx/dtau``: the frozen teacher's PF-ODE (``scd``) or ``cos(tau) z - sin(tau) x0`` (``sct``).
3. ``F-`` and ``dF-/dtau`` by one ``torch.func.jvp`` of the stop-gradient network.
4. Tangent ``g`` (warm-up ``r``), normalised (``g / (||g|| + c)``) or clipped; step the student on
   ``e^w / D ||F - F- - g||^2 - w`` with the adaptive log-weight ``w_phi(tau)``.

The teacher is frozen here and only here, always in eval mode, and never written to a checkpoint.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from onestep.core.ema import ema_update_
from onestep.core.methods.dm_export import export_student
from onestep.core.methods.dm_health import grad_norm, per_sample_norm
from onestep.core.methods.dm_random import GlobalBatchRNG
from onestep.core.methods.frozen_state import FrozenCheckpoint
from onestep.core.methods.scm_jvp import TrigFlowStudent, trigflow_jvp
from onestep.core.noise import NoiseProcess, Trig, append_dims
from onestep.core.objectives.dsm import mean_flat
from onestep.core.objectives.scm import (
    clip_tangent,
    normalize_tangent,
    proposal_angle,
    scm_loss,
    scm_tangent,
    tangent_warmup,
    trigflow_velocity,
)

__all__ = ["AdaptiveWeight", "ContinuousConsistency", "teacher_trigflow_velocity"]

Batch = dict[str, Tensor]
MODES = ("scd", "sct")


class AdaptiveWeight(nn.Module):
    """The adaptive log-weight ``w_phi(tau)`` of sCM (sec. 4.2): a linear map of Fourier features.

    Args:
        features: number of random Fourier features of ``c_noise(tau) = tau``.
        scale: frequency scale of the features.
    """

    freqs: Tensor
    phases: Tensor

    def __init__(self, features: int = 32, scale: float = 1.0, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", 2 * math.pi * scale * torch.randn(features, generator=gen))
        self.register_buffer("phases", 2 * math.pi * torch.rand(features, generator=gen))
        self.linear = nn.Linear(features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, tau: Tensor) -> Tensor:
        """``w_phi(tau)`` of shape ``[B]``; starts at 0 (unit weight)."""
        feats = math.sqrt(2) * torch.cos(tau[:, None] * self.freqs + self.phases)
        return self.linear(feats).squeeze(1)


def teacher_trigflow_velocity(
    teacher: nn.Module, x_t: Tensor, tau: Tensor, sigma_d: float, cond: Any = None
) -> Tensor:
    """The teacher's PF-ODE velocity ``dx/dtau`` in TrigFlow coordinates, for any process.

    The teacher (a Denoiser with a ``process``) is queried at the same signal-to-noise ratio:
    ``t' `` with ``sigma'/alpha' = sigma_d tan(tau)`` and input ``x_t alpha'(t') / cos(tau)``; its
    ``x0`` then gives ``dx/dtau`` by :func:`~onestep.core.objectives.scm.trigflow_velocity`.
    """
    process: NoiseProcess = teacher.process  # pyright: ignore[reportAssignmentType]
    if isinstance(process, Trig) and math.isclose(process.sigma_d, sigma_d):
        t_teacher, x_in = tau * (2 / math.pi), x_t
    else:
        t_teacher = process.t_from_sigma_ratio(sigma_d * torch.tan(tau))
        scale = process.alpha(t_teacher) / torch.cos(tau)
        x_in = x_t * append_dims(scale, x_t.ndim).to(x_t)
    return trigflow_velocity(x_t, teacher(x_in, t_teacher.to(x_t.dtype), cond), tau)


class ContinuousConsistency(FrozenCheckpoint, L.LightningModule):
    """sCD / sCT (Lu & Song 2024) of a :class:`TrigFlowStudent`.

    Args:
        student: the TrigFlow network wrapper (``F_theta`` and ``f``).
        teacher: frozen Denoiser-like teacher with a ``process`` (``scd``); ``None`` for ``sct``.
        mode: ``scd`` (distillation: ``dx/dtau`` from the teacher) or ``sct`` (training).
        weighting: adaptive log-weight network ``w_phi(tau) -> [B]`` (e.g. :class:`AdaptiveWeight`);
            ``None`` trains with unit weight.
        lr: Adam learning rate (student and weighting).
        betas: Adam betas.
        p_mean: mean of ``log sigma`` of the time proposal (sCT -1.0, sCD -0.8).
        p_std: std of ``log sigma`` (sCT 1.4, sCD 1.6).
        tau_min: lowest angle drawn (the teacher velocity divides by ``sin(tau)``).
        warmup_steps: tangent warm-up: ``r`` ramps from 0 to 1 over this many steps.
        tangent_c: ``c`` of tangent normalisation ``g / (||g|| + c)``; ``None`` disables it.
        tangent_clip: clip ``g`` to ``[-tangent_clip, tangent_clip]``; ``None`` disables it.
        tangent_cos_power: ``p`` of ``g = cos^p(tau) df-/dtau``
            (:func:`~onestep.core.objectives.scm.scm_tangent`); 1 is the paper's, 0 keeps a
            signal at the 1-step angle.
        ema_decay: decay of the EMA student used for sampling/export; 0 disables it.
        grad_clip: clip the gradient norm to this (``None``: no clipping).
        seed: seed of the per-step draws (times, noise).
        export_path: if set, :meth:`export_student` writes here when training ends.
    """

    def __init__(
        self,
        student: TrigFlowStudent,
        teacher: nn.Module | None = None,
        mode: str = "scd",
        weighting: nn.Module | None = None,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        p_mean: float = -0.8,
        p_std: float = 1.6,
        tau_min: float = 1e-3,
        warmup_steps: int = 0,
        tangent_c: float | None = 0.1,
        tangent_clip: float | None = None,
        tangent_cos_power: float = 1.0,
        ema_decay: float = 0.0,
        grad_clip: float | None = None,
        seed: int = 0,
        export_path: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["student", "teacher", "weighting"])
        if tangent_cos_power < 0:
            raise ValueError(f"tangent_cos_power must be >= 0 (paper: 1), got {tangent_cos_power}")
        self.automatic_optimization = False
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use 'scd' (with a teacher) or 'sct'")
        if mode == "scd" and teacher is None:
            raise ValueError("mode='scd' distils a teacher: pass teacher= (or use mode='sct')")
        if not isinstance(student, TrigFlowStudent):
            raise TypeError(
                f"student must be a TrigFlowStudent, got {type(student).__name__}; wrap the "
                "network: TrigFlowStudent(net, sigma_d)"
            )
        self.student, self.weighting = student, weighting
        # Frozen here, once: the teacher is the fixed ODE whose trajectories the student learns.
        self.teacher = None if teacher is None else teacher.requires_grad_(False).eval()
        self.ema = copy.deepcopy(student).requires_grad_(False) if ema_decay > 0 else None
        self.sigma_d = student.sigma_d
        self.rng = GlobalBatchRNG(seed)
        self.iteration = 0

    def train(self, mode: bool = True) -> ContinuousConsistency:
        """Switch trainable parts to ``mode``; the teacher stays in eval mode."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    # -- the algorithm box ------------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """One sCD / sCT update (sec. 4, Alg. 1 and 2)."""
        self.rng.start(self, self.iteration)
        if "x0" not in batch:
            raise ValueError("sCM needs real samples: give the NoiseDataModule a real= source")
        x0, cond = batch["x0"], batch.get("cond")
        loss, logs = self.student_step(x0, self.sigma_d * batch["z"], cond)
        self.log_dict(logs, prog_bar=False, sync_dist=True)
        self.iteration += 1
        return loss

    def sample_tau(self, n: int, like: Tensor) -> Tensor:
        """Angles from the sCM proposal, clamped to ``[tau_min, pi/2]``."""
        hp = self.hparams
        log_sigma = hp["p_mean"] + hp["p_std"] * self.rng.randn((n,), like.device).to(like)
        return proposal_angle(log_sigma, self.sigma_d).clamp(hp["tau_min"], math.pi / 2)

    def velocity(self, x0: Tensor, z: Tensor, x_t: Tensor, tau: Tensor, cond: Any) -> Tensor:
        """``dx/dtau``: the teacher's PF-ODE (sCD) or the conditional one of ``(x0, z)`` (sCT)."""
        if self.hparams["mode"] == "sct":
            cos, sin = (append_dims(f(tau), x0.ndim) for f in (torch.cos, torch.sin))
            return cos * z - sin * x0
        assert self.teacher is not None
        with torch.no_grad():
            return teacher_trigflow_velocity(self.teacher, x_t, tau, self.sigma_d, cond)

    def tangent(self, x_t: Tensor, tau: Tensor, dxdt: Tensor, cond: Any) -> tuple[Tensor, ...]:
        """``F-`` and the processed tangent ``g`` (warm-up, normalisation, clipping), detached."""
        hp = self.hparams
        with torch.no_grad():
            F_minus, dF = trigflow_jvp(lambda x, s: self.student.F(x, s, cond), x_t, tau, dxdt)
            r = tangent_warmup(self.iteration, hp["warmup_steps"])
            p = hp.get("tangent_cos_power", 1.0)
            g_raw = scm_tangent(x_t, dxdt, F_minus, dF, tau, self.sigma_d, r, p)
            g = g_raw
            if hp["tangent_c"] is not None:
                g = normalize_tangent(g, hp["tangent_c"])
            if hp["tangent_clip"] is not None:
                g = clip_tangent(g, hp["tangent_clip"])
        return F_minus, g, g_raw

    def student_step(self, x0: Tensor, z: Tensor, cond: Any) -> tuple[Tensor, Batch]:
        """One optimizer step on the mean sCM loss at fresh ``tau``; returns the loss and logs."""
        tau = self.sample_tau(x0.shape[0], x0)
        cos, sin = (append_dims(f(tau), x0.ndim) for f in (torch.cos, torch.sin))
        x_t = cos * x0 + sin * z
        dxdt = self.velocity(x0, z, x_t, tau, cond)
        F_minus, g, g_raw = self.tangent(x_t, tau, dxdt, cond)
        opt: Any = self.optimizers()
        F = self.student.F(x_t, tau, cond)
        w = None if self.weighting is None else self.weighting(tau)
        loss = scm_loss(F, F_minus, g, w).mean()
        opt.zero_grad()
        self.manual_backward(loss)
        params = [p for p in self.parameters() if p.requires_grad]
        logs = {
            "loss/student": loss.detach(),
            "grad_norm/student": grad_norm(params, self.hparams["grad_clip"]),
            "health/tangent_norm": per_sample_norm(g_raw).mean(),
            "health/residual": mean_flat((F.detach() - F_minus - g) ** 2).mean(),
        }
        if w is not None:
            logs["health/log_weight"] = w.detach().mean()
        opt.step()
        if self.ema is not None:
            ema_update_(self.ema, self.student, self.hparams["ema_decay"])
        return loss.detach(), logs

    # -- optimizers, checkpoints, export ----------------------------------------------------------

    def configure_optimizers(self) -> Any:
        """Adam over the student and the adaptive weighting."""
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.hparams["lr"], betas=tuple(self.hparams["betas"]))  # pyright: ignore[reportArgumentType]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the teacher (reloaded from its source) and keep the draw counter."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["scm_iteration"] = self.iteration

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put the live teacher's weights back, so strict loading of a teacher-less file works."""
        super().on_load_checkpoint(checkpoint)
        self.iteration = int(checkpoint.get("scm_iteration", 0))

    def sampler(self) -> TrigFlowStudent:
        """The network to sample with: the EMA student if kept, else the student."""
        return self.student if self.ema is None else self.ema  # pyright: ignore[reportReturnType]

    def export_student(self, path: str | Path) -> Path:
        """Write the sampling network (EMA if kept) as safetensors (see ``dm_export``)."""
        return export_student(self.sampler(), path)

    def on_train_end(self) -> None:
        """Export to ``export_path`` (rank 0 only) when one is configured."""
        if self.hparams["export_path"] and self.trainer.is_global_zero:
            self.export_student(self.hparams["export_path"])
