"""The LR-conditioned denoising UNet of the package's own SR teacher (SR3-style conditioning).

SR3 (Saharia et al. 2022, sec. 2.4) conditions a diffusion UNet on the LR image by concatenating
its bicubic upsampling to the noisy input along channels; we do the same in whatever space the
method works in (pixels or a VAE latent): ``net([x_t, z_L], t)``. With ``lr_skip`` the network
predicts ``x0 = z_L + residual`` (ResShift / SinSR model the HR-LR residual the same way), so an
untrained net already returns the bicubic image and training only has to learn the detail: on a
CPU budget this is the difference between a teacher that beats bicubic and one that does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel
from torch import Tensor, nn

__all__ = ["ConditionalUNet", "tiny_unet"]


class ConditionalUNet(nn.Module):
    """``net(x_t, timestep, z_L) -> output`` around a diffusers ``UNet2DModel``.

    Args:
        unet: a ``UNet2DModel`` with ``in_channels = 2 C`` and ``out_channels = C``.
        lr_skip: add ``z_L`` to the output (use with ``prediction="x0"``).
    """

    def __init__(self, unet: UNet2DModel, lr_skip: bool = True) -> None:
        super().__init__()
        cfg: Any = unet.config
        if cfg.in_channels != 2 * cfg.out_channels:
            raise ValueError(
                f"the UNet must take [x_t, z_L] stacked: in_channels = 2 x out_channels, got "
                f"{cfg.in_channels} in and {cfg.out_channels} out"
            )
        self.unet = unet
        self.lr_skip = lr_skip

    @property
    def channels(self) -> int:
        """Channels of ``x_t`` (and of the output)."""
        return int(self.unet.config["out_channels"])

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (``2^(levels - 1)``)."""
        return 2 ** (len(self.unet.config["block_out_channels"]) - 1)

    def forward(self, x_t: Tensor, timestep: Tensor, z_lr: Tensor) -> Tensor:
        """``[B, C, H, W]`` output for ``x_t`` and ``z_L`` of that shape; ``timestep`` ``[B]``."""
        if z_lr.shape != x_t.shape:
            raise ValueError(
                f"z_L {tuple(z_lr.shape)} must match x_t {tuple(x_t.shape)}: upsample the LR to "
                "the HR grid (onestep.sr.resolver.upsample) before encoding it"
            )
        h, w = x_t.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(
                f"input {h}x{w} is not a multiple of {self.multiple} (the UNet's downsamplings); "
                "crop or pad it (onestep.sr.upscale pads for you)"
            )
        out = self.unet(torch.cat([x_t, z_lr], dim=1), timestep).sample
        return out + z_lr if self.lr_skip else out

    def save(self, path: str | Path) -> Path:
        """Write the UNet (diffusers format) and the wrapper's settings under ``path``."""
        path = Path(path)
        self.unet.save_pretrained(path)
        (path / "onestep_conditional_unet.txt").write_text(f"lr_skip={int(self.lr_skip)}\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ConditionalUNet:
        """Read what :meth:`save` wrote."""
        path = Path(path)
        settings = path / "onestep_conditional_unet.txt"
        if not settings.is_file():
            raise FileNotFoundError(
                f"{path} is not a saved ConditionalUNet (no {settings.name}); save one with "
                "ConditionalUNet.save"
            )
        lr_skip = settings.read_text().strip() == "lr_skip=1"
        return cls(UNet2DModel.from_pretrained(path, local_files_only=True), lr_skip=lr_skip)


def tiny_unet(
    channels: int = 3,
    widths: tuple[int, ...] = (32, 64, 64),
    layers_per_block: int = 1,
    groups: int = 8,
    lr_skip: bool = True,
    seed: int = 0,
) -> ConditionalUNet:
    """A small convolutional UNet (no attention) that trains on a 2-core CPU.

    ``(32, 64, 64)`` has about 1.1 M parameters and takes ~0.2 s per training step on a batch of
    eight 64x64 crops on 2 cores.

    Args:
        channels: channels of the space (3 for pixels, 4 for an SD latent).
        widths: channels per level; ``len(widths) - 1`` downsamplings.
        layers_per_block: ResNet blocks per level.
        groups: GroupNorm groups (must divide every width).
        lr_skip: predict the residual over ``z_L`` (see the module docstring); the output layer
            starts at zero, so the untrained network returns ``z_L`` exactly.
        seed: initialisation seed (the global RNG is left untouched).
    """
    if any(w % groups for w in widths):
        raise ValueError(f"every width in {widths} must be divisible by groups={groups}")
    n = len(widths)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DModel(
            in_channels=2 * channels,
            out_channels=channels,
            block_out_channels=widths,
            layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D",) * n,
            up_block_types=("UpBlock2D",) * n,
            norm_num_groups=groups,
            add_attention=False,  # global attention at the mid level would not fit whole photos
        )
        if lr_skip:  # zero output layer: the untrained net returns z_L, the bicubic image, exactly
            nn.init.zeros_(unet.conv_out.weight)
            nn.init.zeros_(unet.conv_out.bias)  # pyright: ignore[reportArgumentType]
    return ConditionalUNet(unet, lr_skip=lr_skip)
