"""The latent space of a Stable Diffusion VAE (``AutoencoderKL``) as a :class:`~onestep.sr.Space`.

``encode(img) = (mode(q(z | 2 img - 1)) - shift) * scaling_factor`` and
``decode(z) = (D(z / scaling_factor + shift) + 1) / 2``, the scaling of Rombach et al. 2022
(sec. 4.3.2, unit-variance latents) that diffusers keeps in ``vae.config.scaling_factor``
(0.18215 for SD 1.x / 2.x; ``shift_factor`` is ``None`` there and set only for SD3 / Flux VAEs).

Encoding takes the posterior's mode (its mean), not a sample. OSEDiff (Wu et al. 2024) samples
``latent_dist.sample()`` for the LQ latent; the SD posterior's standard deviation is tiny next to
its mean, so the two differ little, and the mode makes the student a deterministic function of the
LQ image: the same input gives the same output in training, evaluation and export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from onestep.sr.space import Space

__all__ = ["LatentSpace", "latent_space_from_folder", "vae_factor"]


def vae_factor(vae: Any) -> int:
    """Downsampling factor of an ``AutoencoderKL``: 2 per level but the last (SD: 8)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


class LatentSpace(Space):
    """``encode(img [B, 3, H, W] in [0, 1]) -> z [B, C, H / f, W / f]`` through an SD VAE.

    Args:
        vae: a diffusers ``AutoencoderKL`` (its encoder may carry LoRA layers; the student adds
            them, see :class:`~onestep.sr.sd.student.SDOneStepStudent`).

    Attributes:
        factor: the VAE's downsampling factor (:func:`vae_factor`, 8 for SD).
        channels: its latent channels (4 for SD 1.x / 2.x).
    """

    def __init__(self, vae: Any) -> None:
        super().__init__()
        self.vae = vae
        self.factor = vae_factor(vae)
        self.channels = int(vae.config.latent_channels)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)

    def _check_image(self, img: Tensor) -> None:
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"LatentSpace.encode expects [B, 3, H, W], got {tuple(img.shape)}")
        h, w = img.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(
                f"image side {h}x{w} is not a multiple of the VAE factor {self.factor}; pad or "
                f"crop it to a multiple of {self.factor} first"
            )

    def encode(self, img: Tensor) -> Tensor:
        """Image in [0, 1] ``[B, 3, H, W]`` -> scaled latent mode ``[B, C, H / f, W / f]``."""
        self._check_image(img)
        x = (img * 2.0 - 1.0).to(self.vae.dtype)
        z = self.vae.encode(x).latent_dist.mode()
        return (z - self.shift_factor) * self.scaling_factor

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latent ``[B, C, h, w]`` -> image ``[B, 3, h f, w f]``, about [0, 1], unclamped."""
        if z.ndim != 4 or z.shape[1] != self.channels:
            raise ValueError(
                f"LatentSpace.decode expects [B, {self.channels}, h, w], got {tuple(z.shape)}"
            )
        z = (z / self.scaling_factor + self.shift_factor).to(self.vae.dtype)
        return (self.vae.decode(z).sample + 1.0) / 2.0


def latent_space_from_folder(path: str) -> LatentSpace:
    """The frozen latent space of a local ``AutoencoderKL`` (a config builder, read at build time).

    For configs: ``space: {class_path: onestep.sr.sd.latent.latent_space_from_folder, init_args:
    {path: ...}}``. Only local files are read.

    Args:
        path: a Stable Diffusion pipeline folder (its ``vae/`` is used) or a bare VAE folder
            (``config.json`` + weights, as ``AutoencoderKL.save_pretrained`` writes).

    Raises:
        FileNotFoundError: neither layout is found at ``path``.
    """
    from diffusers import AutoencoderKL

    root = Path(path)
    folder = root / "vae" if (root / "vae" / "config.json").is_file() else root
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"no AutoencoderKL at {str(root)!r} (looked for vae/config.json and config.json); "
            "download one, e.g. `hf download stabilityai/stable-diffusion-2-1-base --local-dir "
            "<folder>`, and point space.init_args.path at the folder"
        )
    vae: Any = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
    return LatentSpace(vae.requires_grad_(False).eval())
