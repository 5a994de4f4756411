"""``SRTeacher``: the diffusion SR teacher the package trains itself (SR3-style, any space).

Denoising score matching on ``z_H = encode(hr)`` conditioned on ``z_L = encode(upsample(lr))``
(Saharia et al. 2022, SR3, eq. 2-3 in ``x0`` form): ``x_t = alpha_t z_H + sigma_t eps``,
``loss = w(t) ||D(x_t, t, z_L) - z_H||^2`` (:func:`onestep.core.objectives.dsm_loss`). Pixels for
tiny CPU runs, a diffusers ``AutoencoderKL`` latent for real ones (pass ``space``). The
multi-step sampler is :class:`~onestep.sr.models.resolvers.SamplerResolver`; the weights the
sampler uses are an EMA of the trained ones.
"""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from onestep.core import noise, objectives
from onestep.core.denoiser import Denoiser
from onestep.core.ema import ema_update_
from onestep.sr.evaluation import SREvaluation
from onestep.sr.models.resolvers import SamplerResolver, encode_lr
from onestep.sr.models.unet import ConditionalUNet, tiny_unet
from onestep.sr.resolver import lr_multiple, upsample
from onestep.sr.space import PixelSpace, Space

__all__ = ["SRTeacher", "build_denoiser", "psnr"]

_PROCESSES = {"flow": noise.flow, "vp": noise.vp}


def build_denoiser(net: nn.Module, process: str = "flow") -> Denoiser:
    """``Denoiser(net, process, "x0", timestep=1000 t)`` for a :class:`ConditionalUNet`."""
    if process not in _PROCESSES:
        raise ValueError(f"unknown process {process!r}; use one of {sorted(_PROCESSES)}")
    return Denoiser(net, _PROCESSES[process](), prediction="x0", timestep=1000.0)


def psnr(sr: Tensor, hr: Tensor) -> Tensor:
    """RGB PSNR in dB per image, images in [0, 1].

    The quick validation number; the test table uses :class:`onestep.sr.metrics.MetricSuite`'s
    Y-channel PSNR.
    """
    mse = (sr.clamp(0, 1) - hr).square().flatten(1).mean(1).clamp_min(1e-10)
    return -10.0 * torch.log10(mse)


class SRTeacher(SREvaluation, L.LightningModule):
    """Train an LR-conditioned diffusion denoiser for ``x scale`` super-resolution.

    Args:
        net: the network (default: :func:`~onestep.sr.models.unet.tiny_unet`).
        space: where to diffuse (default pixels in [-1, 1]).
        process: ``flow`` (rectified flow) or ``vp`` (cosine VP).
        scale: SR factor of the data.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        ema_decay: decay of the sampling weights' moving average.
        weighting: :func:`onestep.core.objectives.dsm_weight` kind.
        val_steps: sampler steps scored in validation (``val/psnr_teacher_<n>``).
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        space: Space | None = None,
        process: str = "flow",
        scale: int = 4,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        ema_decay: float = 0.995,
        weighting: str = "x0",
        val_steps: tuple[int, ...] = (1, 4),
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "space"])
        self.net = net if net is not None else tiny_unet()
        self.space = space if space is not None else PixelSpace()
        self.space.requires_grad_(False)
        self.denoiser = build_denoiser(self.net, process)
        # The sampler's weights: an EMA copy, never trained directly.
        self.ema_net = copy.deepcopy(self.net).requires_grad_(False)
        self.ema_denoiser = build_denoiser(self.ema_net, process)
        self.scale = scale

    @property
    def multiple(self) -> int:
        """LR side multiple the sampler needs."""
        return lr_multiple(getattr(self.net, "multiple", 1), self.space.factor, self.scale)

    def encode_batch(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """``(z_H, z_L)`` of a ``{"hr", "lr"}`` batch."""
        with torch.no_grad():
            return self.space.encode(batch["hr"]), encode_lr(self.space, batch["lr"], self.scale)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One denoising-score-matching step on fresh ``(t, eps)``."""
        z_hr, z_lr = self.encode_batch(batch)
        process = self.denoiser.process
        t = torch.rand(z_hr.shape[0], device=z_hr.device)
        x_t = process.add_noise(z_hr, torch.randn_like(z_hr), t)
        weight = objectives.dsm_weight(process, t, self.hparams["weighting"])
        loss = objectives.dsm_loss(self.denoiser(x_t, t, z_lr), z_hr, weight).mean()
        self.log("loss/teacher", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Move the sampling weights towards the trained ones."""
        ema_update_(self.ema_net, self.net, self.hparams["ema_decay"])

    def resolver(self, steps: int, solver: str = "euler", seed: int = 0) -> SamplerResolver:
        """The EMA teacher as a ``steps``-step super-resolver."""
        return SamplerResolver(
            self.ema_denoiser, self.space, self.scale, steps, solver, seed, self.multiple
        )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """PSNR of bicubic and of the teacher at each of ``val_steps``."""
        hr = batch["hr"]
        logs = {"val/psnr_bicubic": psnr(upsample(batch["lr"], self.scale), hr).mean()}
        for steps in self.hparams["val_steps"]:
            logs[f"val/psnr_teacher_{steps}"] = psnr(self.resolver(steps)(batch["lr"]), hr).mean()
        self.log_dict(logs, prog_bar=True)

    def configure_optimizers(self) -> Any:
        """AdamW on the network."""
        hp = self.hparams
        return torch.optim.AdamW(
            self.net.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"]
        )

    def save_teacher(self, path: str) -> None:
        """Write the EMA network (the sampler's weights) as a :class:`ConditionalUNet` folder."""
        if not isinstance(self.ema_net, ConditionalUNet):
            raise TypeError(f"only a ConditionalUNet can be saved, not {type(self.ema_net)}")
        self.ema_net.save(path)
