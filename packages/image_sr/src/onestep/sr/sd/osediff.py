"""OSEDiff on a Stable Diffusion folder: the SD student, the CFG teacher and the LoRA fake score.

OSEDiff (Wu et al. 2024, sec. 3.3): the student is SD's UNet + VAE encoder with LoRA, run once
from the LQ latent; the VSD regulariser's real score is the frozen SD UNet with classifier-free
guidance (OSEDiff: scale 7.5, text from DAPE tags; here the user's prompt or empty), and its fake
score a LoRA on a second copy of the UNet trained on the student's latents. This module builds
those three from one local folder and hands them to :class:`~onestep.sr.methods.osediff.OSEDiffVSD`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from onestep.core.adapters.diffusers import from_unet2d_condition
from onestep.core.denoiser import Guided
from onestep.core.lora import add_lora, freeze_all_but_lora
from onestep.core.noise import NoiseProcess
from onestep.sr.methods.osediff import OSEDiffVSD
from onestep.sr.sd.folder import load_sd_folder
from onestep.sr.sd.student import SDSuperResolver

__all__ = ["SDStudent", "osediff_from_sd_folder"]


class SDStudent(nn.Module):
    """An :class:`SDSuperResolver` seen as OSEDiffVSD's generator ``student(z_L, cond) -> z_H``.

    ``encode`` is the LoRA-adapted VAE encoder (so its LoRA trains through the image losses);
    ``cond=None`` means the resolver's own prompt embedding.
    """

    def __init__(self, resolver: SDSuperResolver) -> None:
        super().__init__()
        self.super_resolver = resolver
        self.multiple = resolver.multiple

    @property
    def process(self) -> NoiseProcess:
        """The SD scheduler's noise process (VSD noises ``z_H`` with it)."""
        return self.super_resolver.student.denoiser.process

    def encode(self, img: Tensor) -> Tensor:
        """``z_L`` of an upsampled LR image (clamped to [0, 1] as OSEDiff's PIL resize is)."""
        return self.super_resolver.student.space.encode(img.clamp(0.0, 1.0))

    def forward(self, z_lr: Tensor, cond: Any = None) -> Tensor:
        """One UNet step from ``z_L``."""
        if cond is None:
            cond = self.super_resolver.prompt_embeds(z_lr.shape[0]).to(z_lr)
        return self.super_resolver.student(z_lr, cond)


def osediff_from_sd_folder(
    path: str | Path,
    *,
    scale: int = 4,
    prompt: str = "",
    guidance_scale: float = 7.5,
    lora_rank: int = 4,
    fake_lora_rank: int = 4,
    dtype: torch.dtype = torch.float32,
    **osediff_kwargs: Any,
) -> OSEDiffVSD:
    """OSEDiffVSD with the SD student, the CFG teacher and the LoRA fake score of one folder.

    Args:
        path: a local SD 2.1-base / SD-Turbo diffusers folder.
        scale: SR factor.
        prompt: the prompt every image gets (``""``: empty prompt).
        guidance_scale: the teacher's CFG weight (1: no guidance).
        lora_rank: rank of the student's LoRA (UNet and VAE encoder).
        fake_lora_rank: rank of the fake score's LoRA (UNet attention projections).
        dtype: weights' dtype.
        **osediff_kwargs: the rest of :class:`OSEDiffVSD`'s arguments (weights, rates, times).
    """
    resolver = SDSuperResolver.from_parts(
        load_sd_folder(path, dtype=dtype),
        scale=scale,
        prompt=prompt,
        unet_rank=lora_rank,
        vae_rank=lora_rank,
    )
    student = SDStudent(resolver)
    teacher_parts = load_sd_folder(path, dtype=dtype, text_encoder=False)
    teacher = from_unet2d_condition(teacher_parts.unet, teacher_parts.scheduler)
    teacher.requires_grad_(False).eval()
    fake = copy.deepcopy(teacher).requires_grad_(True).train()
    add_lora(fake.net, rank=fake_lora_rank)
    freeze_all_but_lora(fake)
    prompt_embeds = resolver.prompt_embeds(1)
    real: nn.Module = teacher
    if guidance_scale != 1.0:
        real = Guided(teacher, guidance_scale, uncond=resolver.prompts.empty())
    return OSEDiffVSD(
        teacher=real,
        student=student,
        fake_score=fake,
        space=resolver.student.space,
        scale=scale,
        lr_conditioned=False,
        prompt_embeds=prompt_embeds,
        **osediff_kwargs,
    )
