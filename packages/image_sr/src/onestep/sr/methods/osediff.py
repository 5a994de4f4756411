"""``OSEDiffVSD``: OSEDiff-style one-step SR, regression plus latent VSD (``DistributionMatching``).

OSEDiff (Wu et al. 2024, "One-Step Effective Diffusion Network for Real-World Image
Super-Resolution", sec. 3.2-3.3, eq. 3-7), one iteration:

1. ``z_H = G(z_L)``: the student, a copy of the teacher run once from the LQ input
   (:class:`~onestep.sr.models.student.OneStepStudent`, or the SD student with LoRA).
2. Student update:
   ``L = lambda_2 MSE(x_H_hat, x_H) + lambda_1 P(x_H_hat, x_H) + lambda_vsd VSD(z_H)``, with
   ``x_H_hat = decode(z_H)``, ``P`` LPIPS or the offline substitute
   (:func:`onestep.sr.losses.perceptual_loss`), and VSD's gradient
   ``w(t) (eps_fake(z_t) - eps_real(z_t))`` in ``x0`` form (ProlificDreamer, Wang et al. 2023,
   eq. 9; :func:`onestep.core.objectives.vsd_loss` through the inherited ``student_loss``).
3. Fake-score update: denoising score matching of the fake score (a LoRA on a copy of the
   teacher, OSEDiff's ``eps_phi'``) on the detached ``z_H``.

OSEDiff updates the fake score once per student update (``fake_steps = 1``). The teacher is the
frozen prior: the package's own LR-conditioned SR teacher (``cond = z_L``), or a text-to-image
SD UNet with CFG (wrap it in :class:`onestep.core.denoiser.Guided` and pass ``prompt_embeds``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from onestep.core import objectives
from onestep.core.lora import add_lora, freeze_all_but_lora
from onestep.core.methods.distribution_matching import DistributionMatching
from onestep.core.methods.dm_health import grad_norm, trainable
from onestep.sr.evaluation import SREvaluation
from onestep.sr.losses import perceptual_loss
from onestep.sr.models.resolvers import StudentResolver
from onestep.sr.models.student import OneStepStudent
from onestep.sr.resolver import SuperResolver, lr_multiple, upsample
from onestep.sr.space import PixelSpace, Space

__all__ = ["OSEDiffVSD", "lora_fake_score"]

Batch = dict[str, Any]


def lora_fake_score(teacher: nn.Module, rank: int | None = 4) -> nn.Module:
    """OSEDiff's fake score: a copy of the teacher with LoRA (``rank=None``: fully trainable)."""
    fake = copy.deepcopy(teacher).requires_grad_(True).train()
    if rank is not None:
        add_lora(fake, rank=rank)
        freeze_all_but_lora(fake)
    return fake


class OSEDiffVSD(SREvaluation, DistributionMatching):
    """Distil an SR teacher (or an SD prior) into a one-step super-resolver, OSEDiff-style.

    Args:
        teacher: the frozen prior, ``teacher(x_t, t, cond) -> x0`` with ``process``.
        student: ``student(z_L, cond) -> z_H``; default a copy of the teacher run at ``t = 1``.
        fake_score: default :func:`lora_fake_score` of the teacher with ``fake_lora_rank``.
        space: where the teacher works (default pixels); ``decode`` feeds the image losses.
        scale: SR factor.
        lr_conditioned: the teacher takes ``z_L`` as ``cond`` (the package's SR teacher); else
            ``prompt_embeds`` (a text-to-image prior).
        prompt_embeds: ``[1, L, D]`` prompt embedding for a text-to-image teacher (OSEDiff uses
            DAPE tags; empty prompt when ``None``).
        mse_weight: ``lambda_2`` (OSEDiff: 1).
        perceptual: ``auto``, ``lpips``, ``ssim-grad`` or ``none`` (see ``perceptual_loss``).
        perceptual_weight: ``lambda_1`` (OSEDiff: 2 for LPIPS).
        lpips_weights: local folder with LPIPS weights (never downloaded).
        vsd_weight: ``lambda_vsd`` (OSEDiff: 1).
        fake_lora_rank: LoRA rank of the default fake score (``None``: full copy).
        lr_student: AdamW learning rate of the student (OSEDiff: 5e-5).
        lr_fake: learning rate of the fake score.
        t_min: lowest VSD time.
        t_max: highest VSD time.
        grad_clip: clip both networks' gradient norms.
        seed: seed of the per-step draws.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module | None = None,
        fake_score: nn.Module | None = None,
        space: Space | None = None,
        scale: int = 4,
        lr_conditioned: bool = True,
        prompt_embeds: Tensor | None = None,
        mse_weight: float = 1.0,
        perceptual: str = "auto",
        perceptual_weight: float = 1.0,
        lpips_weights: str | None = None,
        vsd_weight: float = 1.0,
        fake_lora_rank: int | None = 4,
        lr_student: float = 5e-5,
        lr_fake: float = 5e-5,
        t_min: float = 0.02,
        t_max: float = 0.98,
        grad_clip: float | None = 1.0,
        seed: int = 0,
    ):
        student = student if student is not None else OneStepStudent.from_teacher(teacher)
        if fake_score is None:
            fake_score = lora_fake_score(teacher, fake_lora_rank)
        super().__init__(
            student,
            teacher,
            fake_score,
            divergence="vsd",
            fake_steps=1,
            lr_student=lr_student,
            lr_fake=lr_fake,
            betas=(0.9, 0.999),
            grad_clip=grad_clip,
            t_min=t_min,
            t_max=t_max,
            fake_t_min=t_min,
            fake_t_max=t_max,
            health_every=0,
            seed=seed,
        )
        self.save_hyperparameters(
            ignore=["teacher", "student", "fake_score", "space", "prompt_embeds"]
        )
        # A given space may hold trainable LoRA (the SD student's VAE encoder): not frozen here.
        self.space = space if space is not None else PixelSpace()
        self.scale = scale
        self.prompt_embeds = prompt_embeds
        self.perceptual_name, self.perceptual = perceptual_loss(perceptual, lpips_weights)

    # -- the algorithm box ------------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        """One fake-score update on detached ``z_H``, then one student update (OSEDiff Alg.)."""
        self.rng.start(self, self.iteration)
        opt_student, opt_fake = self.optimizers()  # pyright: ignore[reportGeneralTypeIssues]
        z_lr = self.encode_lq(batch["lr"])
        cond = self.teacher_cond(z_lr)
        logs = self.sr_fake_score_step(opt_fake, z_lr, cond)
        logs |= self.sr_student_step(opt_student, z_lr, cond, batch["hr"])
        self.log("loss/mse", logs.pop("loss/mse"), prog_bar=True)
        self.log_dict(logs, prog_bar=False)
        self.iteration += 1

    def encode_lq(self, lr: Tensor) -> Tensor:
        """``z_L``: through the student's own (LoRA) encoder if it has one, else the space's."""
        encode = getattr(self.student, "encode", None) or self.space.encode
        return encode(upsample(lr, self.scale))

    def teacher_cond(self, z_lr: Tensor) -> Any:
        """``z_L`` for an LR-conditioned teacher, else the prompt embedding batch."""
        if self.hparams["lr_conditioned"]:
            return z_lr
        if self.prompt_embeds is None:
            return None
        return self.prompt_embeds.to(z_lr).expand(z_lr.shape[0], -1, -1)

    def sample_student(self, z: Tensor, cond: Any, step: int | None = None) -> Tensor:
        """``z_H = G(z_L)``: here ``z`` is ``z_L``, not noise (the SR student is deterministic)."""
        return self.student(z, None if self.hparams["lr_conditioned"] else cond)

    # -- the two updates --------------------------------------------------------------------------

    def sr_fake_score_step(self, opt: Any, z_lr: Tensor, cond: Any) -> Batch:
        """Denoising score matching of the fake score on fresh, detached ``z_H``."""
        with torch.no_grad():
            z_hr = self.sample_student(z_lr, cond)
        t, z_t = self._noised(z_hr, self.hparams["fake_t_min"], self.hparams["fake_t_max"])
        with self.toggled_optimizer(opt):
            loss = objectives.dsm_loss(self.fake_score(z_t, t, cond), z_hr).mean()
            opt.zero_grad()
            self.manual_backward(loss)
            norm = grad_norm(trainable(self.fake_score), self.hparams["grad_clip"])
            opt.step()
        self._scheduler(1).step()
        return {"loss/fake_score": loss.detach(), "grad_norm/fake_score": norm}

    def sr_student_step(self, opt: Any, z_lr: Tensor, cond: Any, hr: Tensor) -> Batch:
        """``MSE + perceptual`` on the decoded image plus latent VSD; other networks untouched."""
        hp = self.hparams
        with self.toggled_optimizer(opt):
            z_hr = self.sample_student(z_lr, cond)
            sr = self.space.decode(z_hr)
            mse = objectives.mean_flat((sr - hr).square())
            loss = hp["mse_weight"] * mse
            logs = {"loss/mse": mse.mean().detach()}
            if self.perceptual is not None and hp["perceptual_weight"] > 0:
                p = self.perceptual(sr.clamp(0, 1), hr)
                logs[f"loss/{self.perceptual_name}"] = p.mean().detach()
                loss = loss + hp["perceptual_weight"] * p
            if hp["vsd_weight"] > 0:
                vsd = self.student_loss(z_hr, cond)
                logs["loss/vsd"] = vsd.mean().detach()
                loss = loss + hp["vsd_weight"] * vsd
            loss = loss.mean()
            opt.zero_grad()
            self.manual_backward(loss)
            logs["grad_norm/student"] = grad_norm(trainable(self.student), hp["grad_clip"])
            opt.step()
        self._scheduler(0).step()
        logs["loss/student"] = loss.detach()
        return logs

    # -- evaluation -------------------------------------------------------------------------------

    def resolver(self) -> SuperResolver:
        """The student as a one-step super-resolver."""
        own = getattr(self.student, "super_resolver", None)  # the SD student brings its own
        if isinstance(own, SuperResolver):
            return own  # pyright: ignore[reportReturnType]
        net = getattr(getattr(self.student, "denoiser", None), "net", None)
        multiple = lr_multiple(getattr(net, "multiple", 1), self.space.factor, self.scale)
        return StudentResolver(self.student, self.space, self.scale, multiple)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """RGB PSNR of bicubic and of the one-step student."""
        from onestep.sr.models.teacher import psnr

        hr = batch["hr"]
        sr = self.resolver()(batch["lr"])
        self.log_dict(
            {
                "val/psnr_student": psnr(sr, hr).mean(),
                "val/psnr_bicubic": psnr(upsample(batch["lr"], self.scale), hr).mean(),
            },
            prog_bar=True,
        )

    def configure_optimizers(self) -> Any:
        """AdamW on the trainable student and fake-score parameters (constant rates)."""
        hp = self.hparams
        opt_s = torch.optim.AdamW(trainable(self.student), lr=hp["lr_student"])
        opt_f = torch.optim.AdamW(trainable(self.fake_score), lr=hp["lr_fake"])
        sched = [torch.optim.lr_scheduler.LambdaLR(o, lambda _: 1.0) for o in (opt_s, opt_f)]
        return [opt_s, opt_f], sched
