"""The OSEDiff-shaped one-step SR student on Stable Diffusion (Wu et al. 2024, Fig. 2, sec. 3).

The LQ image, bicubic-upsampled to the HR size, is encoded by the SD VAE encoder (with LoRA) to
``z_L``; the SD UNet (with LoRA) is evaluated once at the fixed timestep ``T = 999`` with
``x_T := z_L`` and the prompt embedding, and its prediction is read as the ``x0`` estimate

    ``z_H = (z_L - sqrt(1 - abar_T) eps_theta(z_L; T, c)) / sqrt(abar_T)``   (eps-prediction)

through the core :class:`~onestep.core.denoiser.Denoiser` conversion, so v-prediction models
(SD 2.1 at 768) work too. The frozen VAE decoder turns ``z_H`` into the SR image. The frozen SD
model with CFG is the teacher of the VSD regulariser (trained elsewhere).

LoRA (Hu et al. 2022) with rank 4 on both the VAE encoder and the UNet, as OSEDiff. The default
targets are OSEDiff's: the attention projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``), the
transformer blocks' ``proj_in`` / ``proj_out`` and feed-forward (``ff.net.0.proj``, ``ff.net.2``),
and every convolution (``conv_in``, ``conv1``, ``conv2``, ``conv_shortcut``, the down/upsamplers'
``conv``, ``conv_out``); in the VAE only those inside ``encoder`` plus ``quant_conv``. (OSEDiff also
trains the UNet's ``conv_in`` in full; here only LoRA parameters train.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from onestep.core.adapters.diffusers import DiffusersDenoiser, from_unet2d_condition
from onestep.core.lora import add_lora, freeze_all_but_lora, lora_parameters
from onestep.sr.resolver import SuperResolver, check_lr, upsample
from onestep.sr.sd.folder import SDParts
from onestep.sr.sd.latent import LatentSpace
from onestep.sr.sd.prompts import PromptEncoder

__all__ = ["LORA_TARGETS", "SDOneStepStudent", "SDSuperResolver", "vae_encoder_targets"]

#: OSEDiff's LoRA targets (module-name suffixes), for the UNet and the VAE encoder alike.
LORA_TARGETS: tuple[str, ...] = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv_in",
    "conv1",
    "conv2",
    "conv_shortcut",
    "conv",
    "conv_out",
    "quant_conv",  # the VAE's encoder-side 1x1 conv (post_quant_conv is the decoder's)
)
_LAYERS = (nn.Linear, nn.Conv2d)


def _matches(name: str, suffixes: Sequence[str]) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


def vae_encoder_targets(vae: nn.Module, suffixes: Sequence[str] = LORA_TARGETS) -> list[str]:
    """Full names of the VAE encoder's layers (and ``quant_conv``) that match ``suffixes``.

    The decoder (and ``post_quant_conv``) never match: it stays frozen, as in OSEDiff.
    """
    return [
        name
        for name, module in vae.named_modules()
        if isinstance(module, _LAYERS)
        and (name.startswith("encoder.") or name == "quant_conv")
        and _matches(name, suffixes)
    ]


class SDOneStepStudent(nn.Module):
    """``z_H = x0_theta(z_L, T, c)``: one UNet call at the fixed timestep ``T``.

    Built from :class:`~onestep.sr.sd.folder.SDParts`; the UNet and VAE are adapted **in place**
    (load a second copy for the teacher). Everything but the LoRA layers is frozen.

    Args:
        parts: the loaded SD folder (its UNet, VAE and scheduler are used).
        timestep: the fixed timestep ``T`` of the single UNet call (OSEDiff: 999 of 1000).
        unet_rank: LoRA rank on the UNet (OSEDiff: 4).
        vae_rank: LoRA rank on the VAE encoder (OSEDiff: 4).
        unet_targets: UNet layer-name suffixes to adapt (see :data:`LORA_TARGETS`).
        vae_targets: VAE encoder layer-name suffixes to adapt (see :func:`vae_encoder_targets`).
        lora: add adapters; ``False`` for an exported student whose LoRA is merged (fully frozen).

    Attributes:
        denoiser: the core Denoiser around the UNet, ``denoiser(x_t, t, cond) -> x0``.
        space: the VAE's :class:`~onestep.sr.sd.latent.LatentSpace`.
    """

    def __init__(
        self,
        parts: SDParts,
        *,
        timestep: int = 999,
        unet_rank: int = 4,
        vae_rank: int = 4,
        unet_targets: Sequence[str] = LORA_TARGETS,
        vae_targets: Sequence[str] = LORA_TARGETS,
        lora: bool = True,
    ) -> None:
        super().__init__()
        self.denoiser: DiffusersDenoiser = from_unet2d_condition(parts.unet, parts.scheduler)
        self.space = LatentSpace(parts.vae)
        n_train = len(parts.scheduler.alphas_cumprod)
        if not 0 <= timestep < n_train:
            raise ValueError(f"timestep must lie in [0, {n_train - 1}], got {timestep}")
        self.timestep = int(timestep)
        self.num_train_timesteps = n_train
        self.unet_targets = tuple(unet_targets)
        self.vae_targets = tuple(vae_targets)
        if lora:
            add_lora(parts.unet, rank=unet_rank, target_modules=list(unet_targets))
            add_lora(
                parts.vae, rank=vae_rank, target_modules=vae_encoder_targets(parts.vae, vae_targets)
            )
            freeze_all_but_lora(parts.unet)
            freeze_all_but_lora(parts.vae)
        else:
            self.requires_grad_(False)

    @property
    def unet(self) -> Any:
        """The (LoRA-adapted) ``UNet2DConditionModel``."""
        return self.denoiser.net

    @property
    def vae(self) -> Any:
        """The ``AutoencoderKL`` (LoRA on the encoder only)."""
        return self.space.vae

    @property
    def t(self) -> float:
        """``T`` as the core's continuous time in [0, 1]: ``T / (N - 1)``."""
        return self.timestep / (self.num_train_timesteps - 1)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The LoRA parameters of the UNet and the VAE encoder (nothing else trains)."""
        return list(lora_parameters(self))

    def forward(self, z_L: Tensor, prompt_embeds: Tensor) -> Tensor:
        """One step: ``z_H`` from ``z_L``.

        Args:
            z_L: the LQ latent ``[B, 4, h, w]`` (scaled, see :class:`LatentSpace`).
            prompt_embeds: text embeddings ``[B, L, D]`` (or ``[1, L, D]``, broadcast).

        Returns:
            ``z_H`` ``[B, 4, h, w]``, the UNet's ``x0`` estimate at ``T`` with ``x_T = z_L``.
        """
        if prompt_embeds.shape[0] == 1 and z_L.shape[0] > 1:
            prompt_embeds = prompt_embeds.expand(z_L.shape[0], -1, -1)
        dtype = self.unet.dtype
        t = torch.full((z_L.shape[0],), self.t, device=z_L.device)
        return self.denoiser(z_L.to(dtype), t, prompt_embeds.to(device=z_L.device, dtype=dtype))


class SDSuperResolver(SuperResolver):
    """OSEDiff inference: upsample -> VAE encode -> one UNet step -> VAE decode -> clamp.

    Args:
        student: the :class:`SDOneStepStudent`.
        prompts: the :class:`~onestep.sr.sd.prompts.PromptEncoder` for ``prompt``.
        scale: the SR factor.
        prompt: the text prompt every image gets (``""``: the unconditional embedding).

    Attributes:
        multiple: LR sides must be multiples of this: the HR side must be a multiple of
            ``f 2^k`` (VAE factor ``f``, ``k`` UNet downsamplings, SD: 8 * 8 = 64), so the LR side
            of ``f 2^k / gcd(f 2^k, scale)`` (SD at x4: 16).
    """

    def __init__(
        self, student: SDOneStepStudent, prompts: PromptEncoder, *, scale: int = 4, prompt: str = ""
    ) -> None:
        super().__init__()
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive int, got {scale!r}")
        if prompt and not prompts.has_text_encoder:
            raise ValueError(
                f"prompt {prompt!r} needs a text encoder; load the SD folder with "
                "text_encoder=True, or use prompt=''"
            )
        self.student = student
        self.prompts = prompts
        self.scale = scale
        self.prompt = prompt
        levels = len(student.unet.config.block_out_channels)
        hr_multiple = student.space.factor * 2 ** (levels - 1)
        self.multiple = hr_multiple // math.gcd(hr_multiple, scale)

    @classmethod
    def from_parts(
        cls, parts: SDParts, *, scale: int = 4, prompt: str = "", **student_kwargs: Any
    ) -> SDSuperResolver:
        """Student (LoRA added, see :class:`SDOneStepStudent` for ``student_kwargs``) + prompts."""
        prompts = PromptEncoder(parts.text_encoder, parts.tokenizer)
        student = SDOneStepStudent(parts, **student_kwargs)
        return cls(student, prompts, scale=scale, prompt=prompt)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The student's LoRA parameters."""
        return self.student.trainable_parameters()

    def prompt_embeds(self, batch: int) -> Tensor:
        """The embedding of :attr:`prompt`, ``[batch, L, D]``."""
        return self.prompts([self.prompt]).expand(batch, -1, -1)

    def lr_latent(self, lr: Tensor) -> Tensor:
        """``z_L``: the bicubic-upsampled LR image (clamped to [0, 1]) through the VAE encoder."""
        check_lr(lr)
        h, w = lr.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(
                f"LR size {h}x{w} is not a multiple of {self.multiple} (the VAE and UNet "
                f"downsampling at x{self.scale}); pad it first, as onestep.sr.upscale does"
            )
        return self.student.space.encode(upsample(lr, self.scale).clamp(0.0, 1.0))

    def hr_latent(self, lr: Tensor) -> Tensor:
        """``z_H`` for ``lr`` (what the VSD regulariser and latent losses see)."""
        z_L = self.lr_latent(lr)
        return self.student(z_L, self.prompt_embeds(lr.shape[0]))

    def forward(self, lr: Tensor) -> Tensor:
        """``lr [B, 3, h, w]`` in [0, 1] -> ``[B, 3, h * scale, w * scale]`` in [0, 1]."""
        sr = self.student.space.decode(self.hr_latent(lr))
        return sr.clamp(0.0, 1.0).to(lr.dtype)
