"""``CTMSR``: distillation-free one-step SR by consistency training plus trajectory matching.

You et al. 2025, "Consistency Trajectory Matching for One-Step Generative Super-Resolution"
(official code LabShuHangGU/CTMSR). No teacher: a consistency model ``f_theta`` learns the
noisy-LR-to-HR probability-flow ODE of :class:`~onestep.sr.objectives.ctmsr.CTMSRProcess`
(``x_t = x0 + a(t) (y - x0) + s(t) eps``, ``x_1 = y + sigma_max eps``), then Distribution
Trajectory Matching (DTM) pulls where the SR result's trajectory leads toward where the HR image's
does. One iteration at step ``k`` (the objectives module's pseudo-code):

1. ``N = N(k)`` grid points (:func:`~onestep.sr.objectives.ctmsr.ctmsr_num_points`), ``n ~ U{0 ..
   N-2}`` per sample, one ``eps``; ``x_{t_{n+1}}, x_{t_n}`` on the same trajectory.
2. CT loss ``d(f_theta(x_{t_{n+1}}), sg f_theta(x_{t_n}))`` (``theta^- = theta``, as the official
   code re-copies the target every step), ``d`` = distance + ``perceptual_weight`` x perceptual
   term on the decoded images.
3. From step ``ct_steps`` on: DTM on ``x0_student = f_theta(x_{t_{n+1}})``: the frozen
   ``dtm_model`` (a snapshot of ``f_theta``, refreshed every ``dtm_refresh`` steps) maps the noised
   SR result and the noised HR image (one noise, ``t = t_1``) back; the student moves by
   ``f(x_t) - f(z_t)``.
4. One AdamW step on the sum, then ``theta_ema <- mu theta_ema + (1 - mu) theta``.

Evaluation uses the EMA weights in one step from the noisy LR (:class:`CTMSRStudent`).

Choices where the paper or code leaves room (all arguments, documented below): the network here
is the package's :class:`~onestep.sr.models.unet.ConditionalUNet` (``[x_t, z_L]`` stacked; the
official EDM UNet takes the LR image through an encoder) and its time input is ``1000 t`` rather
than the official ``log(s(t) + 0.002) / 4``: diffusers' sinusoidal embedding is built for
timesteps in [0, 1000]. ``n`` is drawn per sample (the official code draws one per batch). The
``dtm_model`` snapshot is taken at the first DTM step and then every ``dtm_refresh`` steps (the
official run loads a pretrained CT model there and re-copies at multiples of 1000).
"""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from onestep.core.ema import ema_update_
from onestep.core.methods.dm_health import grad_norm
from onestep.core.methods.dm_random import GlobalBatchRNG
from onestep.sr import objectives as sr_objectives
from onestep.sr.losses import perceptual_loss
from onestep.sr.models.resolvers import StudentResolver, encode_lr
from onestep.sr.models.teacher import psnr
from onestep.sr.models.unet import tiny_unet
from onestep.sr.objectives import CT_DISTANCES, CTMSRProcess
from onestep.sr.resolver import lr_multiple, upsample
from onestep.sr.space import PixelSpace, Space

__all__ = ["CTMSR", "DTM_DISTANCES", "CTMSRStudent"]

Batch = dict[str, Any]

#: How DTM compares the SR result with its target: the squared-error surrogate (exact DTM
#: gradient) or the perceptual term on decoded images (official: LPIPS).
DTM_DISTANCES: tuple[str, ...] = ("l2", "perceptual")


class CTMSRStudent(nn.Module):
    """The consistency function ``f(x_t, t) = c_skip x_t + c_out net(x_t, time_scale t, z_L)``.

    As a one-step super-resolver (``forward``): ``z_H = f(z_L + sigma_max eps, t = 1)``, the
    official sampler. ``eps`` comes from a generator seeded with ``seed`` and is drawn once per
    call at shape ``[1, C, H, W]`` and shared by the batch, so an image's result depends neither
    on the global RNG nor on its batch-mates: the resolver is deterministic. (Images of the same
    size share the noise pattern. The trained network is meant to remove it; its direct weight in
    the output, ``c_skip(1)``, is ~0.0025 for the official scalings.)

    Args:
        net: ``net(x_t, timestep, z_L) -> F`` (a :class:`~onestep.sr.models.unet.ConditionalUNet`).
        process: the CTMSR process (gives ``s(t)`` and ``sigma_max``).
        sigma_data: ``sigma_d`` of the scalings (official 0.5).
        sigma_scale: divisor of the noise level in the scalings (official 0.1).
        time_scale: the network's time input is ``time_scale * t``.
        seed: seed of the start noise of :meth:`forward`.
    """

    def __init__(
        self,
        net: nn.Module,
        process: CTMSRProcess,
        sigma_data: float = 0.5,
        sigma_scale: float = 0.1,
        time_scale: float = 1000.0,
        seed: int = 0,
    ):
        super().__init__()
        self.net, self.process = net, process
        self.sigma_data, self.sigma_scale = sigma_data, sigma_scale
        self.time_scale, self.seed = time_scale, seed

    @property
    def multiple(self) -> int:
        """Side multiple the network needs on the grid it runs on."""
        return int(getattr(self.net, "multiple", 1))

    def consistency(self, x_t: Tensor, t: Tensor, z_lr: Tensor) -> Tensor:
        """``f(x_t, t)`` ``[B, C, H, W]``: the HR estimate; ``t`` ``[B]`` in [0, 1]."""
        F = self.net(x_t, self.time_scale * t.to(x_t.dtype), z_lr)
        return sr_objectives.ctmsr_consistency(
            x_t, F, t, self.process, self.sigma_data, self.sigma_scale
        )

    def start(self, z_lr: Tensor) -> Tensor:
        """``x_1 = z_L + sigma_max eps`` with the seeded, batch-shared ``eps``."""
        gen = torch.Generator().manual_seed(self.seed)
        eps = torch.randn((1, *z_lr.shape[1:]), generator=gen).to(z_lr)
        return z_lr + self.process.sigma_max * eps

    def forward(self, z_lr: Tensor, cond: Any = None) -> Tensor:
        """One step from the noisy LR: ``z_H = f(x_1, 1)``, ``[B, C, H, W]``."""
        if cond is not None:
            raise ValueError("CTMSR is conditioned on z_L alone; call the student without cond")
        t = torch.ones(z_lr.shape[0], device=z_lr.device, dtype=z_lr.dtype)
        return self.consistency(self.start(z_lr), t, z_lr)


class CTMSR(L.LightningModule):
    """Train a one-step super-resolver by CTMSR: consistency training, then CT + DTM.

    One optimizer step per batch, so Lightning's ``global_step`` is the iteration ``k`` the
    curriculum and the DTM phase are counted in.

    Args:
        net: ``net(x_t, timestep, z_L)`` (default :func:`~onestep.sr.models.unet.tiny_unet`);
            with ``lr_skip`` it starts as the identity on ``z_L``, so step 0 returns ~bicubic.
        space: where the process runs (default pixels in [-1, 1]); ``decode`` feeds the
            perceptual term.
        scale: SR factor of the data.
        sigma_max: noise std at ``t = 1`` (official 1): the sampler starts at ``z_L + sigma_max
            eps``.
        sigma_min: noise std at ``t = 0`` (official 0).
        rho_noise: Karras exponent of the noise ramp (official 1).
        rho_shift: exponent of the residual shift ``a(t) = t^rho_shift`` (official 1).
        sigma_data: ``sigma_d`` of the consistency scalings (official 0.5).
        sigma_scale: noise-level divisor of the scalings (official 0.1).
        time_scale: the network sees ``time_scale * t``; 1000 puts ``t`` in the range diffusers'
            sinusoidal time embedding is built for (the official EDM net takes
            ``log(s(t) + 0.002) / 4``).
        s0: CT grid intervals at the start of the curriculum (official 4).
        s1: CT grid intervals at its end (official 3); ``N = s + 1`` points.
        total_steps: iterations ``K`` the curriculum spans (official ``total_iter``). ``None``:
            the trainer's ``max_steps``, which counts exactly these iterations here (one
            optimizer step per batch); set it explicitly when the run is bounded by epochs.
        distance: CT distance, one of ``l2``, ``pseudo_huber``, ``charbonnier`` (official).
        distance_c: pseudo-Huber scale or Charbonnier ``eps`` (``None``: the objective's default).
        perceptual: perceptual term on the decoded images: ``auto`` (LPIPS with
            ``lpips_weights``, else the offline SSIM + gradient substitute), ``lpips``,
            ``ssim-grad`` or ``none`` (see :func:`onestep.sr.losses.perceptual_loss`).
        perceptual_weight: its weight relative to ``distance`` (official 0.5 LPIPS + 0.5
            Charbonnier, i.e. 1).
        lpips_weights: local folder with LPIPS weights (never downloaded).
        ct_steps: CT-only iterations; DTM joins from iteration ``ct_steps`` (0-based) on
            (official ``ct_iter``).
        dtm_weight: DTM loss weight (official 1.6).
        dtm_refresh: iterations between snapshots of ``dtm_model`` (official 1000); the first is
            taken at iteration ``ct_steps``.
        dtm_time: DTM's time; ``None`` is ``t_1`` of the current CT grid (official).
        dtm_distance: ``l2`` (the squared-error surrogate, exact DTM gradient) or ``perceptual``
            (``0.5 w P(decode(x0), decode(target))`` with the perceptual net; official LPIPS).
        ema_decay: decay of the evaluated EMA weights (official 0.999).
        lr: AdamW learning rate (official 5e-5).
        betas: AdamW betas (official (0.9, 0.9)).
        weight_decay: AdamW weight decay (official 0).
        grad_clip: clip the gradient norm to this (``None``: no clipping; official none).
        seed: seed of the per-iteration draws (``n``, noise).
        noise_seed: seed of the one-step sampler's start noise (:class:`CTMSRStudent`).
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        space: Space | None = None,
        scale: int = 4,
        sigma_max: float = 1.0,
        sigma_min: float = 0.0,
        rho_noise: float = 1.0,
        rho_shift: float = 1.0,
        sigma_data: float = 0.5,
        sigma_scale: float = 0.1,
        time_scale: float = 1000.0,
        s0: int = 4,
        s1: int = 3,
        total_steps: int | None = None,
        distance: str = "charbonnier",
        distance_c: float | None = None,
        perceptual: str = "auto",
        perceptual_weight: float = 1.0,
        lpips_weights: str | None = None,
        ct_steps: int = 500_000,
        dtm_weight: float = 1.6,
        dtm_refresh: int = 1000,
        dtm_time: float | None = None,
        dtm_distance: str = "l2",
        ema_decay: float = 0.999,
        lr: float = 5e-5,
        betas: tuple[float, float] = (0.9, 0.9),
        weight_decay: float = 0.0,
        grad_clip: float | None = None,
        seed: int = 0,
        noise_seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "space"])
        self.automatic_optimization = False
        _check_args(self.hparams)
        self.process = CTMSRProcess(sigma_max, sigma_min, rho_noise, rho_shift)
        self.space = (space if space is not None else PixelSpace()).requires_grad_(False)
        self.scale = scale
        net = net if net is not None else tiny_unet()
        # f_theta (trained), its EMA (evaluated) and the DTM snapshot (frozen between refreshes).
        self.student = CTMSRStudent(
            net, self.process, sigma_data, sigma_scale, time_scale, seed=noise_seed
        )
        self.ema = copy.deepcopy(self.student).requires_grad_(False).eval()
        self.dtm_model = copy.deepcopy(self.student).requires_grad_(False).eval()
        self.perceptual_name, self.perceptual = perceptual_loss(perceptual, lpips_weights)
        if dtm_distance == "perceptual" and self.perceptual is None:
            raise ValueError("dtm_distance='perceptual' needs a perceptual net; set perceptual")
        self.rng = GlobalBatchRNG(seed)

    @property
    def net(self) -> nn.Module:
        """The trained network (inside the online consistency function)."""
        return self.student.net

    def train(self, mode: bool = True) -> CTMSR:
        """Switch the online model to ``mode``; the EMA and the DTM snapshot stay in eval mode."""
        super().train(mode)
        self.ema.eval()
        self.dtm_model.eval()
        return self

    # -- schedule ---------------------------------------------------------------------------------

    @property
    def curriculum_steps(self) -> int:
        """``K`` of the curriculum: ``total_steps``, else the trainer's ``max_steps``."""
        total = self.hparams["total_steps"]
        if total is not None:
            return int(total)
        trainer = getattr(self, "_trainer", None)
        max_steps = -1 if trainer is None else int(trainer.max_steps)
        if max_steps < 1:
            raise ValueError(
                "CTMSR's CT curriculum needs its length: set model total_steps or the trainer's "
                f"max_steps (got max_steps={max_steps})"
            )
        return max_steps

    def num_points(self, step: int) -> int:
        """CT grid points ``N`` at iteration ``step`` (``s0 + 1`` down to ``s1 + 1``)."""
        hp = self.hparams
        return sr_objectives.ctmsr_num_points(step, self.curriculum_steps, hp["s0"], hp["s1"])

    def dtm_active(self, step: int) -> bool:
        """Whether iteration ``step`` adds DTM (``step >= ct_steps``)."""
        return step >= self.hparams["ct_steps"]

    def dtm_due(self, step: int) -> bool:
        """Whether ``dtm_model`` is refreshed at the start of iteration ``step``."""
        hp = self.hparams
        return self.dtm_active(step) and (step - hp["ct_steps"]) % hp["dtm_refresh"] == 0

    # -- the algorithm box ------------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        """CT on one trajectory pair, plus DTM after ``ct_steps``; one AdamW step, then EMA."""
        step = self.global_step
        self.rng.start(self, step)
        opt: Any = self.optimizers()
        z_hr, z_lr = self.encode_batch(batch)
        grid = sr_objectives.ctmsr_time_grid(self.num_points(step)).to(z_hr)
        dtm = self.dtm_active(step)
        if self.dtm_due(step):
            self.refresh_dtm_model()
        with self.toggled_optimizer(opt):
            x0_student, loss, logs = self.ct_loss(z_hr, z_lr, grid)
            if dtm:
                dtm_loss, dtm_logs = self.dtm_loss(x0_student, z_hr, z_lr, grid)
                loss, logs = loss + dtm_loss, logs | dtm_logs
            loss = loss.mean()
            opt.zero_grad()
            self.manual_backward(loss)
            logs["grad_norm/student"] = grad_norm(self.net.parameters(), self.hparams["grad_clip"])
            opt.step()
        ema_update_(self.ema, self.student, self.hparams["ema_decay"])
        logs["loss/student"] = loss.detach()
        logs["health/num_points"] = torch.tensor(float(grid.numel()))
        logs["health/dtm"] = torch.tensor(float(dtm))
        self.log("loss/ct", logs.pop("loss/ct"), prog_bar=True)
        self.log_dict(logs)

    def encode_batch(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(z_H, z_L)`` of a ``{"hr", "lr"}`` batch."""
        with torch.no_grad():
            return self.space.encode(batch["hr"]), encode_lr(self.space, batch["lr"], self.scale)

    @torch.no_grad()
    def refresh_dtm_model(self) -> None:
        """Copy the online weights into the frozen DTM model (official ``self_iterative``)."""
        self.dtm_model.load_state_dict(self.student.state_dict())

    # -- the losses -------------------------------------------------------------------------------

    def ct_loss(self, z_hr: Tensor, z_lr: Tensor, grid: Tensor) -> tuple[Tensor, Tensor, Batch]:
        """``(f_online, loss [B], logs)``: CT on ``(x_{t_{n+1}}, x_{t_n})`` of one trajectory."""
        hp = self.hparams
        b = z_hr.shape[0]
        n = self.rng.uniform(b, 0.0, grid.numel() - 1).floor().long().clamp_max(grid.numel() - 2)
        t_cur, t_next = grid[n.to(grid.device)], grid[n.to(grid.device) + 1]
        eps = self.rng.randn(z_hr.shape, self.device).to(z_hr)
        x_next, x_cur = sr_objectives.ctmsr_ct_pair(z_hr, z_lr, eps, t_cur, t_next, self.process)
        f_online = self.student.consistency(x_next, t_next, z_lr)
        with torch.no_grad():  # theta^- = theta: the official target is re-copied every step
            f_target = self.student.consistency(x_cur, t_cur, z_lr)
        loss = sr_objectives.ctmsr_ct_loss(f_online, f_target, hp["distance"], c=hp["distance_c"])
        logs = {"loss/ct": loss.mean().detach()}
        if self.perceptual is not None and hp["perceptual_weight"] > 0:
            p = self.perceptual_term(f_online, f_target)
            logs[f"loss/{self.perceptual_name}"] = p.mean().detach()
            loss = loss + hp["perceptual_weight"] * p
        return f_online, loss, logs

    def dtm_loss(
        self, x0_student: Tensor, z_hr: Tensor, z_lr: Tensor, grid: Tensor
    ) -> tuple[Tensor, Batch]:
        """``(loss [B], logs)``: DTM of the SR result against the HR trajectory at one ``t``."""
        hp = self.hparams
        b = z_hr.shape[0]
        t_value = hp["dtm_time"] if hp["dtm_time"] is not None else float(grid[1])
        t = torch.full((b,), t_value, device=z_hr.device, dtype=z_hr.dtype)
        eps = self.rng.randn(z_hr.shape, self.device).to(z_hr)
        z_t, x_t = sr_objectives.dtm_inputs(x0_student, z_hr, z_lr, eps, t, self.process)
        with torch.no_grad():
            x0_fake = self.dtm_model.consistency(z_t, t, z_lr)
            x0_real = self.dtm_model.consistency(x_t, t, z_lr)
        if hp["dtm_distance"] == "l2":
            loss = sr_objectives.dtm_loss(x0_student, x0_fake, x0_real, z_hr)
        else:
            target = sr_objectives.dtm_target(x0_student, x0_fake, x0_real)
            w = sr_objectives.dtm_weight(x0_student, z_hr)
            loss = 0.5 * w * self.perceptual_term(x0_student, target)
        return hp["dtm_weight"] * loss, {"loss/dtm": loss.mean().detach()}

    def perceptual_term(self, z: Tensor, z_target: Tensor) -> Tensor:
        """The perceptual distance ``[B]`` of the decoded images (target detached)."""
        assert self.perceptual is not None
        sr = self.space.decode(z).clamp(0, 1)
        with torch.no_grad():
            ref = self.space.decode(z_target).clamp(0, 1)
        return self.perceptual(sr, ref)

    # -- evaluation -------------------------------------------------------------------------------

    def resolver(self) -> StudentResolver:
        """The EMA consistency model as a deterministic one-step super-resolver."""
        multiple = lr_multiple(self.ema.multiple, self.space.factor, self.scale)
        return StudentResolver(self.ema, self.space, self.scale, multiple)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """RGB PSNR of bicubic and of the one-step EMA student."""
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
        """AdamW on the online network (constant rate)."""
        hp = self.hparams
        return torch.optim.AdamW(
            self.net.parameters(),
            lr=hp["lr"],
            betas=tuple(hp["betas"]),  # pyright: ignore[reportArgumentType]
            weight_decay=hp["weight_decay"],
        )


def _check_args(hp: Any) -> None:
    """Raise on arguments that cannot work, naming the value and the fix."""
    if hp["distance"] not in CT_DISTANCES:
        raise ValueError(f"unknown CT distance {hp['distance']!r}; use one of {CT_DISTANCES}")
    if hp["dtm_distance"] not in DTM_DISTANCES:
        raise ValueError(f"unknown dtm_distance {hp['dtm_distance']!r}; use one of {DTM_DISTANCES}")
    if hp["ct_steps"] < 0 or hp["dtm_refresh"] < 1:
        raise ValueError(
            f"need ct_steps >= 0 and dtm_refresh >= 1, got {hp['ct_steps']}, {hp['dtm_refresh']}"
        )
    if hp["total_steps"] is not None and hp["total_steps"] < 1:
        raise ValueError(
            f"total_steps must be >= 1 (or None for max_steps), got {hp['total_steps']}"
        )
    if hp["dtm_time"] is not None and not 0.0 < hp["dtm_time"] <= 1.0:
        raise ValueError(f"dtm_time must lie in (0, 1] (or None for t_1), got {hp['dtm_time']}")
    if not 0.0 <= hp["ema_decay"] <= 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1], got {hp['ema_decay']}")
    if hp["s0"] < 1 or hp["s1"] < 1:
        raise ValueError(f"s0 and s1 must be >= 1 (official 4 and 3), got {hp['s0']}, {hp['s1']}")
