"""``DistributionMatching``: one Lightning module for DMD2, VSD, SiD, SIM and f-distill.

The algorithm (DMD2, Yin et al. 2024, Alg. 1, with the divergence swapped by name):

1. ``fake_steps`` times: draw student samples ``x = G(z)`` (no gradient), fit the fake score to
   them by denoising score matching (and the optional discriminator: real vs student).
2. Once: draw ``x = G(z)`` with gradient, noise it to ``x_t``, query the frozen teacher and the
   fake score at ``x_t``, and step the student on the divergence's loss (plus the optional GAN
   term).

The teacher is frozen here and only here (``requires_grad_(False)``, always in eval mode), and is
never written to a checkpoint: it is reloaded from its own source.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from onestep.core import objectives
from onestep.core.methods import dm_divergences
from onestep.core.methods.dm_divergences import student_loss
from onestep.core.methods.dm_export import export_student
from onestep.core.methods.dm_generate import check_times, generate
from onestep.core.methods.dm_health import grad_norm, per_sample_norm, trainable
from onestep.core.methods.dm_random import GlobalBatchRNG
from onestep.core.methods.dm_teacher import TeacherGuidance
from onestep.core.methods.frozen_state import FrozenCheckpoint
from onestep.core.noise import NoiseProcess

__all__ = ["DistributionMatching"]

Batch = dict[str, Tensor]


def _schedule(warmup: int, decay: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up over ``warmup`` updates, cosine decay over ``decay``.

    ``decay = 0`` keeps the rate constant after warm-up.
    """

    def factor(i: int) -> float:
        up = min(1.0, (i + 1) / warmup) if warmup > 0 else 1.0
        if decay <= 0:
            return up
        return up * 0.5 * (1.0 + math.cos(math.pi * min(i, decay) / decay))

    return factor


class DistributionMatching(FrozenCheckpoint, L.LightningModule):
    """Distill ``teacher`` into a one- or few-step ``student`` by distribution matching.

    One training step (one batch) is one iteration: ``fake_steps`` fake-score updates and one
    student update. Lightning's ``global_step`` counts every optimizer step, i.e.
    ``fake_steps + 1`` per iteration; bound runs with the data length, ``limit_train_batches``
    or ``max_epochs`` rather than ``max_steps``. :attr:`iteration` counts iterations.

    Args:
        student: Denoiser-like generator ``student(x_t, t, cond) -> x0`` with a ``process``.
        teacher: frozen Denoiser-like real score (e.g. the analytic GMM teacher).
        fake_score: trainable Denoiser-like score of the student's distribution.
        divergence: ``dmd2``, ``vsd``, ``sid``, ``sim``, ``fdiv-rkl``, ``fdiv-fkl`` or
            ``fdiv-js`` (see :mod:`onestep.core.methods.dm_divergences`).
        fake_steps: fake-score updates per student update (two time-scale rule, DMD2 sec. 4.1).
        lr_student: Adam learning rate of the student.
        lr_fake: Adam learning rate of the fake score (and discriminator).
        betas: Adam betas of both optimizers (DMD2 uses ``(0, 0.99)``).
        warmup_student: linear learning-rate warm-up steps of the student.
        warmup_fake: linear learning-rate warm-up steps of the fake score.
        decay_steps: cosine-decay both learning rates to 0 over this many student updates
            (the fake score's over ``decay_steps * fake_steps`` of its updates); 0: constant.
        grad_clip: clip each network's gradient norm to this (``None``: no clipping).
        t_min: lowest time of the distribution-matching loss.
        t_max: highest time of the distribution-matching loss.
        fake_t_min: lowest time of the fake score's denoising loss.
        fake_t_max: highest time of the fake score's denoising loss.
        fake_weighting: ``dsm_weight`` kind of the fake score's loss (``x0``, ``eps``, ...).
        student_times: the student's step schedule, e.g. ``[1.0]`` or ``[1.0, 0.5]``; several
            steps train with backward simulation (DMD2 sec. 4.5).
        guidance_scale: fixed CFG weight of the teacher (``None``: unguided).
        guidance_range: ``[lo, hi]`` for random-scale CFG (SNOOPI); overrides ``guidance_scale``.
        uncond: the null condition label for CFG (e.g. ``-1``).
        decoupled: split guided DMD into CA and DM terms (Decoupled DMD); needs ``dmd2``.
        ca_weight: weight of the CFG-augmentation term.
        dm_weight: weight of the distribution-matching term.
        ca_t_min: lowest time of the CA term.
        ca_t_max: highest time of the CA term.
        discriminator: optional ``discriminator(x_t, t, None) -> logits [B]`` (unconditional:
            real samples carry no labels), trained with the fake score's optimizer on real
            (``batch["x0"]``) vs student samples; e.g. ``SmallDiscriminator`` or DMD2's
            ``DenoiserFeatureHead`` on the fake score's features.
        gan_weight: weight of the student's GAN loss (DMD2 sec. 4.3); 0 turns it off.
        gan_kind: GAN loss kind passed to the objectives (``ns``: non-saturating, ``hinge``).
        r1_weight: weight of the R1 penalty on real samples.
        sid_alpha: SiD's ``alpha``.
        sim_c: SIM's pseudo-Huber constant.
        health_every: log ``health/*`` every this many steps (0: never).
        seed: seed of the per-step random draws (times, noise, backward-simulation steps).
        export_path: if set, :meth:`export_student` writes here when training ends.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        fake_score: nn.Module,
        divergence: str = "dmd2",
        fake_steps: int = 5,
        lr_student: float = 1e-4,
        lr_fake: float = 1e-4,
        betas: tuple[float, float] = (0.0, 0.99),
        warmup_student: int = 0,
        warmup_fake: int = 0,
        decay_steps: int = 0,
        grad_clip: float | None = None,
        t_min: float = 0.02,
        t_max: float = 0.98,
        fake_t_min: float = 0.02,
        fake_t_max: float = 0.98,
        fake_weighting: str = "x0",
        student_times: list[float] | None = None,
        guidance_scale: float | None = None,
        guidance_range: tuple[float, float] | None = None,
        uncond: int | None = None,
        decoupled: bool = False,
        ca_weight: float = 1.0,
        dm_weight: float = 1.0,
        ca_t_min: float = 0.02,
        ca_t_max: float = 0.98,
        discriminator: nn.Module | None = None,
        gan_weight: float = 0.0,
        gan_kind: str = "ns",
        r1_weight: float = 0.0,
        sid_alpha: float = 1.2,
        sim_c: float = 1.0,
        health_every: int = 1,
        seed: int = 0,
        export_path: str | None = None,
    ):
        networks = ("self", "__class__", "student", "teacher", "fake_score", "discriminator")
        settings = {k: v for k, v in locals().items() if k not in networks}
        super().__init__()
        self.save_hyperparameters(ignore=list(networks[2:]))
        # Under LightningCLI a subclass's hparams are the config's (the subclass's own arguments):
        # the settings this class reads from self.hparams must be there too.
        for key, value in settings.items():
            self.hparams.setdefault(key, value)
        self.automatic_optimization = False
        self.spec = divergence_spec = dm_divergences.divergence(divergence)
        if fake_steps < 1:
            raise ValueError(f"fake_steps must be >= 1 (DMD2 uses 5), got {fake_steps}")
        if decoupled and divergence_spec.name != "dmd2":
            raise ValueError(
                f"decoupled=True splits the DMD gradient; use divergence='dmd2', not {divergence!r}"
            )
        needs_d = divergence_spec.needs_ratio or gan_weight > 0
        if needs_d and discriminator is None:
            raise ValueError(
                f"divergence={divergence!r} with gan_weight={gan_weight} needs a discriminator"
            )
        self.student, self.fake_score, self.discriminator = student, fake_score, discriminator
        # Frozen here, once: the teacher is the fixed target and never trains (no grad, eval mode).
        self.teacher = teacher.requires_grad_(False).eval()
        process = getattr(student, "process", None)
        if not isinstance(process, NoiseProcess):
            raise TypeError(
                f"student {type(student).__name__} has no .process (NoiseProcess); wrap its "
                "network in onestep.core.denoiser.Denoiser(net, process, prediction)"
            )
        self.process: NoiseProcess = process
        self.times = check_times([1.0] if student_times is None else student_times)
        self.guidance = TeacherGuidance(guidance_scale, guidance_range, uncond)
        self.rng = GlobalBatchRNG(seed)
        self.iteration = 0

    def train(self, mode: bool = True) -> DistributionMatching:
        """Switch trainable parts to ``mode``; the teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    # -- the algorithm box ------------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        """``fake_steps`` fake-score updates, then one student update (DMD2, Alg. 1)."""
        self.rng.start(self, self.iteration)
        opt_student, opt_fake = self.optimizers()  # pyright: ignore[reportGeneralTypeIssues]
        cond, x_real = batch.get("cond"), batch.get("x0")
        logs: dict[str, Tensor] = {}
        for _ in range(self.hparams["fake_steps"]):
            logs |= self.fake_score_step(opt_fake, batch["z"], cond, x_real)
        logs |= self.student_step(opt_student, batch["z"], cond)
        if self.hparams["health_every"] and self.iteration % self.hparams["health_every"] == 0:
            logs |= self.health(batch["z"], cond)
        self.log_dict(logs, prog_bar=False, sync_dist=True)
        self.iteration += 1

    # -- the two updates --------------------------------------------------------------------------

    def sample_student(self, z: Tensor, cond: Any, step: int | None = None) -> Tensor:
        """Student ``x0`` at a schedule step (random if ``None``), with backward simulation."""
        k = self.rng.randint(len(self.times)) if step is None else step
        return generate(self.student, self.process, z, self.times, k, self._randn, cond)

    def fake_score_step(self, opt: Any, z: Tensor, cond: Any, x_real: Tensor | None) -> Batch:
        """Fit the fake score (and discriminator) to fresh, detached student samples."""
        with torch.no_grad():
            x = self.sample_student(self._randn(z.shape).to(z), cond)
        t, x_t = self._noised(x, self.hparams["fake_t_min"], self.hparams["fake_t_max"])
        with self.toggled_optimizer(opt):
            weight = objectives.dsm_weight(self.process, t, self.hparams["fake_weighting"])
            loss = objectives.dsm_loss(self.fake_score(x_t, t, cond), x, weight).mean()
            logs = {"loss/fake_score": loss.detach()}
            if self.discriminator is not None and x_real is not None:
                d_loss = self._discriminator_loss(x_real, x_t, t)
                logs["loss/discriminator"] = d_loss.detach()
                loss = loss + d_loss
            opt.zero_grad()
            self.manual_backward(loss)
            params = trainable(self.fake_score, self.discriminator)
            logs["grad_norm/fake_score"] = grad_norm(params, self.hparams["grad_clip"])
            opt.step()
        self._scheduler(1).step()
        return logs

    def student_step(self, opt: Any, z: Tensor, cond: Any) -> Batch:
        """One distribution-matching (+ GAN) update of the student; other networks untouched."""
        with self.toggled_optimizer(opt):
            x = self.sample_student(z, cond)
            loss = self.student_loss(x, cond).mean()
            logs = {"loss/student": loss.detach()}
            if self.hparams["gan_weight"] > 0:
                t, x_t = self._noised(x, self.hparams["t_min"], self.hparams["t_max"])
                gan = objectives.gan_generator_loss(
                    self._logits(x_t, t), self.hparams["gan_kind"]
                ).mean()
                logs["loss/gan_student"] = gan.detach()
                loss = loss + self.hparams["gan_weight"] * gan
            opt.zero_grad()
            self.manual_backward(loss)
            logs["grad_norm/student"] = grad_norm(
                self.student.parameters(), self.hparams["grad_clip"]
            )
            opt.step()
        self._scheduler(0).step()
        return logs

    # -- the student's loss -----------------------------------------------------------------------

    def student_loss(self, x: Tensor, cond: Any) -> Tensor:
        """Per-sample student loss ``[B]`` of the configured divergence at fresh ``(t, eps)``."""
        hp = self.hparams
        t, x_t = self._noised(
            x if self.spec.through_networks else x.detach(), hp["t_min"], hp["t_max"]
        )
        w = self.guidance.weights(self.rng.uniform(x.shape[0], 0.0, 1.0, x.device))
        grad_ctx = nullcontext() if self.spec.through_networks else torch.no_grad()
        with grad_ctx:
            if self.hparams["decoupled"]:
                x0_real, _ = self.guidance.cond_and_uncond(self.teacher, x_t, t, cond)
            else:
                x0_real = self.guidance.x0(self.teacher, x_t, t, cond, w)
            x0_fake = self.fake_score(x_t, t, cond)
        log_ratio = None
        if self.spec.needs_ratio:
            with torch.no_grad():
                log_ratio = self._logits(x_t, t)
        loss = student_loss(
            self.spec,
            x,
            x0_real,
            x0_fake,
            log_ratio=log_ratio,
            sid_alpha=hp["sid_alpha"],
            sim_c=hp["sim_c"],
        )
        if self.hparams["decoupled"]:
            loss = hp["dm_weight"] * loss + hp["ca_weight"] * self._ca_loss(x, cond, w)
        return loss

    def _ca_loss(self, x: Tensor, cond: Any, w: Tensor) -> Tensor:
        """Decoupled DMD's CFG-augmentation term, at its own times.

        Pushes ``x`` along ``(w - 1)(x0_c - x0_u)``: a DMD loss whose ``x0_real - x0_fake`` is
        exactly that direction.
        """
        t, x_t = self._noised(x.detach(), self.hparams["ca_t_min"], self.hparams["ca_t_max"])
        with torch.no_grad():
            x0_c, x0_u = self.guidance.cond_and_uncond(self.teacher, x_t, t, cond)
            x0_target = x0_c + self.guidance.augmentation(x0_c, x0_u, w)
        return objectives.dmd_loss(x, x0_target, x0_c)

    # -- discriminator ----------------------------------------------------------------------------

    def _logits(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Discriminator logits ``[B]``; unconditional, as the real samples carry no labels."""
        if self.discriminator is None:
            raise ValueError("this configuration needs a discriminator; pass discriminator=")
        return self.discriminator(x_t, t, None).reshape(x_t.shape[0])

    def _discriminator_loss(self, x_real: Tensor, x_t_fake: Tensor, t: Tensor) -> Tensor:
        """Real vs student at the same times; optional R1 on the noised real samples."""
        eps = self._randn(x_real.shape).to(x_real)
        x_t_real = (
            self.process.add_noise(x_real, eps, t)
            .detach()
            .requires_grad_(self.hparams["r1_weight"] > 0)
        )
        logits_real = self._logits(x_t_real, t)
        logits_fake = self._logits(x_t_fake.detach(), t)
        loss = objectives.gan_discriminator_loss(
            logits_real, logits_fake, self.hparams["gan_kind"]
        ).mean()
        if self.hparams["r1_weight"] > 0:
            loss = (
                loss
                + self.hparams["r1_weight"] * objectives.r1_penalty(logits_real, x_t_real).mean()
            )
        return loss

    # -- health -----------------------------------------------------------------------------------

    def health(self, z: Tensor, cond: Any) -> Batch:
        """Loss-health numbers on fresh student samples.

        ``health/fake_fit``: the fake score's denoising error on them (how well it tracks the
        student); ``health/dm_grad_norm``: mean per-sample norm of the divergence's gradient with
        respect to the student sample.
        """
        with torch.no_grad():
            x = self.sample_student(self._randn(z.shape).to(z), cond)
            t, x_t = self._noised(x, self.hparams["fake_t_min"], self.hparams["fake_t_max"])
            fit = objectives.dsm_loss(self.fake_score(x_t, t, cond), x).mean()
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.student_loss(x, cond).sum(), x)
        return {"health/fake_fit": fit, "health/dm_grad_norm": per_sample_norm(g).mean()}

    # -- randomness -------------------------------------------------------------------------------

    def _randn(self, shape: Any) -> Tensor:
        return self.rng.randn(shape, self.device)

    def _noised(self, x: Tensor, t_min: float, t_max: float) -> tuple[Tensor, Tensor]:
        """Fresh ``t ~ U[t_min, t_max]`` and ``x_t = alpha x + sigma eps``."""
        t = self.rng.uniform(x.shape[0], t_min, t_max, x.device).to(x.dtype)
        return t, self.process.add_noise(x, self._randn(x.shape).to(x), t)

    # -- optimizers, checkpoints, export ----------------------------------------------------------

    def configure_optimizers(self) -> Any:
        """Adam for the student; Adam for fake score (+ discriminator); each its own schedule."""
        hp = self.hparams
        betas = tuple(hp["betas"])
        opt_s = torch.optim.Adam(self.student.parameters(), lr=hp["lr_student"], betas=betas)  # pyright: ignore[reportArgumentType]
        fake_params = trainable(self.fake_score, self.discriminator)
        opt_f = torch.optim.Adam(fake_params, lr=hp["lr_fake"], betas=betas)  # pyright: ignore[reportArgumentType]
        decay = hp["decay_steps"]
        sched_s = LambdaLR(opt_s, _schedule(hp["warmup_student"], decay))
        sched_f = LambdaLR(opt_f, _schedule(hp["warmup_fake"], decay * hp["fake_steps"]))
        return [opt_s, opt_f], [sched_s, sched_f]

    def _scheduler(self, i: int) -> Any:
        """Scheduler ``i`` (0: student, 1: fake score); manual optimization steps them here."""
        schedulers: Any = self.lr_schedulers()
        return schedulers[i]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the teacher (reloaded from its source) and keep the draw counter."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["dm_iteration"] = self.iteration

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put the live teacher's weights back, so strict loading of a teacher-less file works."""
        super().on_load_checkpoint(checkpoint)
        self.iteration = int(checkpoint.get("dm_iteration", 0))

    def export_student(self, path: str | Path, **diffusers_kwargs: Any) -> Path:
        """Write the student: safetensors, or a diffusers folder for a diffusers student.

        Args:
            path: see :func:`onestep.core.methods.dm_export.export_student`.
            **diffusers_kwargs: ``base_pipeline`` / ``scheduler`` for ``save_diffusers``.
        """
        return export_student(self.student, path, **diffusers_kwargs)

    def on_train_end(self) -> None:
        """Export to ``export_path`` (rank 0 only) when one is configured."""
        if self.hparams["export_path"] and self.trainer.is_global_zero:
            self.export_student(self.hparams["export_path"])
