"""Stable-Diffusion-based one-step SR (OSEDiff-shaped, Wu et al. 2024).

``load_sd_folder`` reads a local SD 2.1-base / SD-Turbo folder into :class:`SDParts`;
:class:`SDOneStepStudent` adds LoRA to the VAE encoder and the UNet and maps ``z_L -> z_H`` with
one UNet call at ``T = 999``; :class:`SDSuperResolver` wraps it as a
:class:`~onestep.sr.SuperResolver`; ``export_sd_student`` / ``load_sd_student`` write and read a
merged diffusers folder. ``write_tiny_sd_folder`` makes a random-weight folder for tests.
"""

from onestep.sr.sd.export import export_sd_student, load_sd_student
from onestep.sr.sd.folder import SDParts, load_sd_folder
from onestep.sr.sd.latent import LatentSpace, vae_factor
from onestep.sr.sd.prompts import PromptEncoder
from onestep.sr.sd.student import (
    LORA_TARGETS,
    SDOneStepStudent,
    SDSuperResolver,
    vae_encoder_targets,
)
from onestep.sr.sd.tiny import sd21_unet_config, sd21_vae_config, write_tiny_sd_folder

__all__ = [
    "LORA_TARGETS",
    "LatentSpace",
    "PromptEncoder",
    "SDOneStepStudent",
    "SDParts",
    "SDSuperResolver",
    "export_sd_student",
    "load_sd_folder",
    "load_sd_student",
    "sd21_unet_config",
    "sd21_vae_config",
    "vae_encoder_targets",
    "vae_factor",
    "write_tiny_sd_folder",
]
