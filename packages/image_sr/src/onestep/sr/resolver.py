"""The contract every super-resolver in onestep-sr keeps: ``lr [B, 3, h, w] -> [B, 3, sh, sw]``.

Images are float in [0, 1] on both sides. :func:`~onestep.sr.upscale` (tiling, colour fix, files),
the metrics and the benchmark take any :class:`SuperResolver`: bicubic, the teacher at N steps, a
one-step student, or an exported Stable-Diffusion student.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Bicubic", "SuperResolver", "check_lr", "lr_multiple", "upsample"]


def check_lr(lr: Tensor) -> None:
    """Raise a clear error unless ``lr`` is a ``[B, 3, h, w]`` float batch."""
    if lr.ndim != 4 or lr.shape[1] != 3:
        raise ValueError(f"expected an LR batch [B, 3, h, w], got shape {tuple(lr.shape)}")
    if not lr.is_floating_point():
        raise TypeError(f"expected a float LR batch in [0, 1], got {lr.dtype}")


def upsample(lr: Tensor, scale: int) -> Tensor:
    """Bicubic ``x scale`` upsampling, the LR-to-HR-grid step every method here starts from."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)


def lr_multiple(net_multiple: int, factor: int, scale: int) -> int:
    """The LR side multiple that makes the HR grid a multiple of ``net_multiple * factor``."""
    m = net_multiple * factor
    return m // math.gcd(m, scale)


class SuperResolver(nn.Module):
    """Maps an LR batch ``[B, 3, h, w]`` in [0, 1] to ``[B, 3, h * scale, w * scale]`` in [0, 1].

    Subclasses set :attr:`scale` and implement :meth:`forward`. :attr:`multiple` is the side
    length the LR input must be a multiple of (a UNet with ``k`` downsamplings on the HR grid of a
    ``x s`` model needs ``2^k / s``); :func:`~onestep.sr.upscale.upscale` pads to it.
    """

    scale: int
    multiple: int = 1

    def forward(self, lr: Tensor) -> Tensor:  # pragma: no cover - interface
        """Super-resolve ``lr``."""
        raise NotImplementedError


class Bicubic(SuperResolver):
    """The bicubic baseline of every SR table."""

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, lr: Tensor) -> Tensor:
        """Bicubic upsampling, clamped to [0, 1]."""
        check_lr(lr)
        return upsample(lr, self.scale).clamp(0.0, 1.0)
