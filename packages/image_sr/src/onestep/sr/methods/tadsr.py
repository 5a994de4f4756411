"""``TADSR``: time-aware distillation of an SR diffusion teacher into a one-step student.

He et al. 2024, "One Step Diffusion-based Super-Resolution with Time-Aware Distillation"
(official code LearningHx/TAD-SR, ResShift teacher: ``training_losses_distill`` /
``training_losses_D``). One iteration (the official trainer's order):

1. ``z_T``: the teacher's multi-step sample from the student's own start point (below).
2. Discriminator update: noise the HR latent and the (detached) student output at one sampled
   ``t`` with one noise; the head reads the frozen teacher's features there; hinge loss.
3. Student update on ``z_S = G(z_L)``::

       L = w_distill MSE(z_S, z_T) + w_hfsd HFSD(z_S) + w_adv L_adv(z_S) + w_mse MSE(x_S, x_H)

   HFSD noises ``z_S`` and the reference (``z_T``, or the HR latent) with one noise at a small
   time and compares the teacher's noise predictions; ``L_adv = -D(teacher features of the noised
   z_S, t)``, whose gradient reaches the student through the teacher's **input** (the teacher's
   weights never change: they require no gradient and are in no optimizer); ``x_S =
   decode(z_S)``.

**Same start point.** ResShift's student and teacher both start at ``x_T = y + kappa sqrt(eta_T)
eps``. The package's SR teacher (SR3-style) samples from ``x_1 = noise`` conditioned on ``z_L``,
while the one-step student (:class:`~onestep.sr.models.student.OneStepStudent`, OSEDiff's
construction) is the teacher's network presented with ``x_1 = z_L`` at ``t = 1``. With
``teacher_start="lr"`` (default) the teacher's ODE starts from that very point, ``x_1 = z_L``
(conditioned on ``z_L``): the student is then exactly the teacher's first Euler step from the
start the teacher integrates from, and distillation matches the ``teacher_steps``-step map with a
one-step map of the same input, as in TAD-SR (with ``teacher_steps = 1`` the target is the
untrained student's own output). ``teacher_start="noise"`` starts the teacher from fresh Gaussian
noise instead (its training distribution); the student, which never sees that noise, then
regresses to the teacher's posterior mean.

**Times.** Our teacher is a continuous-time process. The defaults map the official ResShift steps
(15 steps, ``kappa = 2``, ``min_noise_level = 0.04``, ``etas_end = 0.99``, ``power = 0.3``) to
the flow times with the same noise-to-signal ratio ``sigma / alpha`` (:func:`resshift_flow_times`):
HFSD at steps ``{0, 1, 2}`` (the "small" times, ``t ~ 0.04 - 0.27``), the discriminator at
``{0 .. 13}``.

**Discriminator.** The default is a :class:`~onestep.core.discriminators.DenoiserFeatureHead`
on the teacher's mid block: one small head, the frozen teacher as its backbone. The official
``Time_Aware_Discriminator`` also takes ``t`` as an input; here ``t`` reaches the head through the
features, which the teacher's time embedding modulates. Perturbation noise is standard normal (the
SD trainer and the paper; the ResShift trainer draws it with ``rand_like``).

**Image-space MSE.** The official trainers have no image-space term (TAD-SeeSR's ``mse_loss`` is
the latent distillation term), so ``mse_weight`` defaults to 0; it is the pixel regression to HR
that OSEDiff uses, here for runs where a weak teacher needs the data's help.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from onestep.core import sampling
from onestep.core.discriminators import DenoiserFeatureHead
from onestep.core.methods.dm_health import grad_norm, trainable
from onestep.core.methods.dm_random import GlobalBatchRNG
from onestep.core.methods.frozen_state import FrozenCheckpoint
from onestep.core.noise import NoiseProcess
from onestep.core.objectives.dsm import mean_flat
from onestep.sr import objectives as sr_objectives
from onestep.sr.models.resolvers import StudentResolver, encode_lr
from onestep.sr.models.student import OneStepStudent
from onestep.sr.models.teacher import psnr
from onestep.sr.models.unet import ConditionalUNet
from onestep.sr.resolver import upsample
from onestep.sr.space import PixelSpace, Space

__all__ = [
    "DISC_TIMES",
    "HFSD_TIMES",
    "TADSR",
    "resshift_flow_times",
]

Batch = dict[str, Any]
TEACHER_STARTS: tuple[str, ...] = ("lr", "noise")
HFSD_REFERENCES: tuple[str, ...] = ("teacher", "hr")


def resshift_flow_times(
    steps: range | list[int],
    num_steps: int = 15,
    kappa: float = 2.0,
    min_noise_level: float = 0.04,
    etas_end: float = 0.99,
    power: float = 0.3,
) -> tuple[float, ...]:
    """Flow times ``t`` with the noise-to-signal ratio of ResShift's steps ``steps``.

    ResShift's exponential schedule (``get_named_eta_schedule``): ``sqrt(eta_k) = e0 b^(p_k)``,
    ``e0 = min(min_noise_level / kappa, min_noise_level, sqrt(0.001))``, ``b = (etas_end /
    e0)^(1 / (T - 1))``, ``p_k = (k / (T - 1))^power (T - 1)``; its ``x_k = (1 - eta_k) x0 +
    kappa sqrt(eta_k) eps + eta_k y``, so ``r_k = kappa sqrt(eta_k) / (1 - eta_k)``. Rectified
    flow has ``r = t / (1 - t)``, hence ``t_k = r_k / (1 + r_k)``, rounded to 3 decimals.
    """
    e0 = min(min_noise_level / kappa, min_noise_level, math.sqrt(0.001))
    base = math.exp(math.log(etas_end / e0) / (num_steps - 1))
    times = []
    for k in steps:
        sqrt_eta = base ** ((k / (num_steps - 1)) ** power * (num_steps - 1)) * e0
        ratio = kappa * sqrt_eta / (1.0 - sqrt_eta**2)
        times.append(round(ratio / (1.0 + ratio), 3))
    return tuple(times)


#: HFSD times: ResShift steps 0-2 (official ``randint(0, 3)``) as flow times.
HFSD_TIMES: tuple[float, ...] = resshift_flow_times(range(3))
#: Discriminator times: ResShift steps 0-13 (official ``randint(0, T - 1)``) as flow times.
DISC_TIMES: tuple[float, ...] = resshift_flow_times(range(14))


def _out_channels(layer: nn.Module) -> int:
    """Channels of ``layer``'s output: its ``out_channels``, else its last submodule's."""
    for module in [layer, *reversed(list(layer.modules()))]:
        channels = getattr(module, "out_channels", None)
        if isinstance(channels, int):
            return channels
    raise ValueError(f"cannot infer the channels of {type(layer).__name__}; pass disc_channels")


def _net_multiple(module: nn.Module) -> int:
    """Side multiple of the first :class:`ConditionalUNet` inside ``module`` (1 if none)."""
    for m in module.modules():
        if isinstance(m, ConditionalUNet):
            return m.multiple
    return 1


class TADSR(FrozenCheckpoint, L.LightningModule):
    """Distil an SR diffusion teacher into a one-step super-resolver, TAD-SR style.

    Two optimizers (student, discriminator), each stepped once per batch, so Lightning's
    ``global_step`` advances by 2 per batch (1 with ``adv_weight = 0``); bound runs by batches
    (``max_epochs``, ``limit_train_batches``) or set ``max_steps`` to twice the batches.

    Args:
        teacher: the frozen SR teacher, ``teacher(x_t, t, z_L) -> x0`` with a ``process`` (e.g.
            ``SRTeacher.ema_denoiser`` or
            :func:`~onestep.sr.models.loading.load_teacher_denoiser`). Frozen here: no gradient,
            eval mode, left out of checkpoints.
        student: ``student(z_L) -> z_H``; default ``OneStepStudent.from_teacher(teacher)`` (a
            trainable copy run once at ``t = 1`` from ``z_L``).
        discriminator: ``discriminator(x_t, t, z_L) -> logits [B]``; default a
            :class:`~onestep.core.discriminators.DenoiserFeatureHead` on the teacher's
            ``disc_layer`` (its own weights only; the backbone is the frozen teacher). The
            features are time-aware: the teacher's blocks add its embedding of ``t``.
        space: where the teacher works (default pixels); ``decode`` feeds the image-space MSE.
        scale: SR factor of the data.
        teacher_steps: teacher ODE steps of the distillation target (official: the full 15-step
            ResShift sampler).
        teacher_solver: ``euler`` (DDIM, official), ``heun`` or ``dpm++2m``.
        teacher_start: ``lr`` (the student's own start ``x_1 = z_L``) or ``noise`` (see the
            module docstring).
        distill_weight: weight of the MSE to the teacher's sample (official 1).
        hfsd_weight: weight of HFSD (official ``hsd_weight`` 1).
        hfsd_times: the small teacher times HFSD draws from, one per sample (flow ``t``).
        hfsd_reference: what the student output is compared with: ``teacher`` (the teacher's
            sample, official ``score_distill_target``) or ``hr`` (the HR latent).
        adv_weight: weight of the generator's GAN loss (official ``GAN_weight`` 0.02); 0 turns
            the discriminator off.
        disc_times: times the discriminator draws from, one per sample.
        disc_layer: dotted name (in ``teacher.named_modules()``) of the hooked feature layer.
        disc_channels: channels of that layer's output (``None``: read from the layer).
        disc_hidden: width of the default head.
        mse_weight: weight of the image-space MSE to HR (official: no such term, 0).
        lr_student: AdamW learning rate of the student (official 5e-5).
        lr_disc: AdamW learning rate of the discriminator (official: the student's).
        betas: AdamW betas of both.
        weight_decay: AdamW weight decay of both (official 0).
        grad_clip: clip each network's gradient norm (``None``: no clipping; TAD-SeeSR's
            ``max_grad_norm`` 1).
        seed: seed of the per-iteration draws (times, noise).
    """

    frozen_modules = ("teacher",)

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module | None = None,
        discriminator: nn.Module | None = None,
        space: Space | None = None,
        scale: int = 4,
        teacher_steps: int = 15,
        teacher_solver: str = "euler",
        teacher_start: str = "lr",
        distill_weight: float = 1.0,
        hfsd_weight: float = 1.0,
        hfsd_times: tuple[float, ...] = HFSD_TIMES,
        hfsd_reference: str = "teacher",
        adv_weight: float = 0.02,
        disc_times: tuple[float, ...] = DISC_TIMES,
        disc_layer: str = "net.unet.mid_block",
        disc_channels: int | None = None,
        disc_hidden: int = 64,
        mse_weight: float = 0.0,
        lr_student: float = 5e-5,
        lr_disc: float = 5e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        grad_clip: float | None = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["teacher", "student", "discriminator", "space"])
        self.automatic_optimization = False
        _check_args(self.hparams)
        process = getattr(teacher, "process", None)
        if not isinstance(process, NoiseProcess):
            raise TypeError(
                f"teacher {type(teacher).__name__} has no .process (NoiseProcess); pass a "
                "Denoiser, e.g. SRTeacher.ema_denoiser or "
                "onestep.sr.models.loading.load_teacher_denoiser"
            )
        self.process: NoiseProcess = process
        # The student is copied before any hook is put on the teacher (a copy would carry it).
        self.student = student if student is not None else OneStepStudent.from_teacher(teacher)
        # Frozen here, once: the teacher is the fixed target and never trains (no grad, eval).
        self.teacher = teacher.requires_grad_(False).eval()
        if discriminator is None and adv_weight > 0:
            discriminator = self._default_discriminator(disc_layer, disc_channels, disc_hidden)
        self.discriminator = discriminator
        self.space = (space if space is not None else PixelSpace()).requires_grad_(False)
        self.scale = scale
        self.rng = GlobalBatchRNG(seed)
        self.iteration = 0

    def _default_discriminator(self, layer: str, channels: int | None, hidden: int) -> nn.Module:
        """A head on the teacher's ``layer`` (the teacher is its backbone, not its submodule)."""
        modules = dict(self.teacher.named_modules())
        if layer not in modules:
            names = [n for n in modules if n.count(".") <= 2][:12]
            raise ValueError(
                f"disc_layer {layer!r} is not a submodule of the teacher; pick one of its "
                f"named_modules(), e.g. {names}"
            )
        if channels is None:
            channels = _out_channels(modules[layer])
        return DenoiserFeatureHead(self.teacher, layer, channels, hidden)

    @property
    def adversarial(self) -> bool:
        """Whether the GAN term (and so the discriminator update) is on."""
        return self.discriminator is not None and self.hparams["adv_weight"] > 0

    def train(self, mode: bool = True) -> TADSR:
        """Switch trainable parts to ``mode``; the teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    # -- the algorithm box ------------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        """Teacher sample, one discriminator update, one student update (TAD-SR)."""
        self.rng.start(self, self.iteration)
        opts: Any = self.optimizers()
        opt_student = opts[0] if isinstance(opts, list) else opts
        z_hr, z_lr = self.encode_batch(batch)
        z_teacher = self.teacher_sample(z_lr)
        t_adv, eps_adv = self._draw(z_hr, self.hparams["disc_times"])
        logs: Batch = {}
        if self.adversarial:
            logs |= self.discriminator_step(opts[1], z_lr, z_hr, t_adv, eps_adv)
        logs |= self.student_step(opt_student, z_lr, z_hr, z_teacher, batch["hr"], t_adv, eps_adv)
        self.log("loss/student", logs.pop("loss/student"), prog_bar=True)
        self.log_dict(logs)
        self.iteration += 1

    def encode_batch(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(z_H, z_L)`` of a ``{"hr", "lr"}`` batch."""
        with torch.no_grad():
            return self.space.encode(batch["hr"]), encode_lr(self.space, batch["lr"], self.scale)

    @torch.no_grad()
    def teacher_sample(self, z_lr: Tensor) -> Tensor:
        """The teacher's ``teacher_steps``-step ODE sample given ``z_L``, from ``teacher_start``."""
        hp = self.hparams
        start = z_lr if hp["teacher_start"] == "lr" else self._randn(z_lr)
        return sampling.sample(
            self.teacher,  # pyright: ignore[reportArgumentType]
            start,
            hp["teacher_steps"],
            solver=hp["teacher_solver"],
            cond=z_lr,
        )

    # -- the two updates --------------------------------------------------------------------------

    def discriminator_step(
        self, opt: Any, z_lr: Tensor, z_hr: Tensor, t: Tensor, eps: Tensor
    ) -> Batch:
        """Hinge loss: noised HR (real) vs noised, detached student output (fake)."""
        assert self.discriminator is not None
        with torch.no_grad():
            z_fake = self.student(z_lr)
        x_fake, x_real = self._noised_pair(z_fake, z_hr, eps, t)
        with self.toggled_optimizer(opt):
            logits_real = self.discriminator(x_real, t, z_lr)
            logits_fake = self.discriminator(x_fake, t, z_lr)
            loss = sr_objectives.tadsr_discriminator_loss(logits_real, logits_fake).mean()
            opt.zero_grad()
            self.manual_backward(loss)
            norm = grad_norm(trainable(self.discriminator), self.hparams["grad_clip"])
            opt.step()
        self._clear_features()
        return {"loss/discriminator": loss.detach(), "grad_norm/discriminator": norm}

    def student_step(
        self,
        opt: Any,
        z_lr: Tensor,
        z_hr: Tensor,
        z_teacher: Tensor,
        hr: Tensor,
        t_adv: Tensor,
        eps_adv: Tensor,
    ) -> Batch:
        """``distill + HFSD + adversarial + image MSE`` on ``z_S = G(z_L)``; teacher untouched."""
        hp = self.hparams
        with self.toggled_optimizer(opt):
            z_student = self.student(z_lr)
            distill = sr_objectives.tadsr_distill_loss(z_student, z_teacher)
            loss = hp["distill_weight"] * distill
            logs: Batch = {"loss/distill": distill.mean().detach()}
            if hp["hfsd_weight"] > 0:
                reference = z_teacher if hp["hfsd_reference"] == "teacher" else z_hr
                hfsd = self.hfsd_loss(z_student, reference, z_lr)
                logs["loss/hfsd"] = hfsd.mean().detach()
                loss = loss + hp["hfsd_weight"] * hfsd
            if self.adversarial:
                adv = self.adversarial_loss(z_student, z_hr, z_lr, t_adv, eps_adv)
                logs["loss/adv"] = adv.mean().detach()
                loss = loss + hp["adv_weight"] * adv
            if hp["mse_weight"] > 0:
                mse = mean_flat((self.space.decode(z_student) - hr).square())
                logs["loss/mse"] = mse.mean().detach()
                loss = loss + hp["mse_weight"] * mse
            loss = loss.mean()
            opt.zero_grad()
            self.manual_backward(loss)
            logs["grad_norm/student"] = grad_norm(trainable(self.student), hp["grad_clip"])
            opt.step()
        self._clear_features()
        logs["loss/student"] = loss.detach()
        return logs

    def adversarial_loss(
        self, z_student: Tensor, z_hr: Tensor, z_lr: Tensor, t: Tensor, eps: Tensor
    ) -> Tensor:
        """Generator hinge loss ``[B]`` on the teacher's features of the noised ``z_S``.

        The head runs the frozen teacher on ``x_t`` (with the student's graph): the gradient
        reaches the student through the teacher's input; the teacher's weights get none.
        """
        assert self.discriminator is not None
        x_fake, _ = self._noised_pair(z_student, z_hr, eps, t)
        return sr_objectives.tadsr_generator_loss(self.discriminator(x_fake, t, z_lr))

    def hfsd_loss(self, z_student: Tensor, reference: Tensor, z_lr: Tensor) -> Tensor:
        """HFSD ``[B]``: the teacher's noise predictions at ``z_S`` and the reference, one noise."""
        t, eps = self._draw(z_student, self.hparams["hfsd_times"])
        alpha, sigma = self.process.alpha(t), self.process.sigma(t)
        with torch.no_grad():
            x_fake, x_real = self._noised_pair(z_student.detach(), reference, eps, t)
            eps_fake = sr_objectives.tadsr_eps_from_x0(
                x_fake, self.teacher(x_fake, t, z_lr), alpha, sigma
            )
            eps_real = sr_objectives.tadsr_eps_from_x0(
                x_real, self.teacher(x_real, t, z_lr), alpha, sigma
            )
        return sr_objectives.tadsr_hfsd_loss(z_student, eps_fake, eps_real)

    # -- helpers ----------------------------------------------------------------------------------

    def _randn(self, like: Tensor) -> Tensor:
        return self.rng.randn(like.shape, self.device).to(like)

    def _draw(self, like: Tensor, times: tuple[float, ...]) -> tuple[Tensor, Tensor]:
        """A time from ``times`` per sample and one standard normal noise like ``like``."""
        grid = torch.tensor(times, dtype=like.dtype, device=like.device)
        u = self.rng.uniform(like.shape[0], 0.0, len(times), like.device)
        t = grid[u.floor().long().clamp_max(len(times) - 1)]
        return t, self._randn(like)

    def _noised_pair(
        self, x0_fake: Tensor, x0_real: Tensor, eps: Tensor, t: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Both latents noised to ``t`` by the teacher's process with the same ``eps``."""
        alpha, sigma = self.process.alpha(t), self.process.sigma(t)
        return sr_objectives.tadsr_noised_pair(x0_fake, x0_real, eps, alpha, sigma)

    def _clear_features(self) -> None:
        """Drop the head's captured teacher features (and the graph they hold)."""
        clear = getattr(self.discriminator, "clear", None)
        if clear is not None:
            clear()

    # -- evaluation, optimizers, checkpoints ------------------------------------------------------

    def resolver(self) -> StudentResolver:
        """The student as a one-step super-resolver."""
        m = _net_multiple(self.student) * self.space.factor
        return StudentResolver(self.student, self.space, self.scale, m // math.gcd(m, self.scale))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """RGB PSNR of bicubic and of the one-step student."""
        hr = batch["hr"]
        sr = self.resolver()(batch["lr"])
        self.log_dict(
            {
                "val/psnr_student": psnr(sr, hr).mean(),
                "val/psnr_bicubic": psnr(upsample(batch["lr"], self.scale), hr).mean(),
            },
            prog_bar=True,
            batch_size=hr.shape[0],
        )

    def configure_optimizers(self) -> Any:
        """AdamW for the student; AdamW for the discriminator's own weights if adversarial."""
        hp = self.hparams
        betas: Any = tuple(hp["betas"])
        opt_s = torch.optim.AdamW(
            trainable(self.student),
            lr=hp["lr_student"],
            betas=betas,
            weight_decay=hp["weight_decay"],
        )
        if not self.adversarial:
            return opt_s
        # Never the teacher's weights: a head's backbone is not its submodule.
        opt_d = torch.optim.AdamW(
            trainable(self.discriminator),
            lr=hp["lr_disc"],
            betas=betas,
            weight_decay=hp["weight_decay"],
        )
        return [opt_s, opt_d]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the teacher (reloaded from its source) and keep the draw counter."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["tadsr_iteration"] = self.iteration

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put the live teacher's weights back, so strict loading of a teacher-less file works."""
        super().on_load_checkpoint(checkpoint)
        self.iteration = int(checkpoint.get("tadsr_iteration", 0))


def _check_args(hp: Any) -> None:
    """Raise on arguments that cannot work, naming the value and the fix."""
    if hp["teacher_steps"] < 1:
        raise ValueError(f"teacher_steps must be >= 1 (official 15), got {hp['teacher_steps']}")
    if hp["teacher_start"] not in TEACHER_STARTS:
        raise ValueError(
            f"unknown teacher_start {hp['teacher_start']!r}; use one of {TEACHER_STARTS}"
        )
    if hp["hfsd_reference"] not in HFSD_REFERENCES:
        raise ValueError(
            f"unknown hfsd_reference {hp['hfsd_reference']!r}; use one of {HFSD_REFERENCES}"
        )
    for name in ("hfsd_times", "disc_times"):
        times = tuple(hp[name])
        if not times or not all(0.0 < t < 1.0 for t in times):
            raise ValueError(
                f"{name} must be a non-empty list of times in (0, 1) (the teacher's eps is "
                f"undefined at t = 0 and its x0 at t = 1), got {times}"
            )
