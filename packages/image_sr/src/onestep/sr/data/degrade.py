"""Bicubic degradation and the crops SR training uses, in torch (CPU or GPU, batched or not).

``bicubic_downsample`` is the classical SR degradation (Set5/DIV2K "x4 bicubic"): an antialiased
bicubic resize by ``1/scale`` (``torch.nn.functional.interpolate(..., antialias=True)``, which
matches PIL's / MATLAB's ``imresize`` kernel support when shrinking), clamped to [0, 1]. The HR
image is first cropped to a multiple of ``scale`` (:func:`modcrop`) so LR and HR align exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bicubic_downsample", "modcrop", "random_crop"]


def _check_image(x: Tensor, name: str) -> None:
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must be [C, H, W] or [B, C, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor in [0, 1], got {x.dtype}")


def _check_scale(scale: int) -> None:
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer (2, 3, 4, ...), got {scale!r}")


def modcrop(hr: Tensor, scale: int) -> Tensor:
    """Crop the bottom/right so that height and width are multiples of ``scale``."""
    _check_image(hr, "hr")
    _check_scale(scale)
    h, w = hr.shape[-2:]
    if h < scale or w < scale:
        raise ValueError(f"image {h}x{w} is smaller than the scale {scale}")
    return hr[..., : h - h % scale, : w - w % scale]


def bicubic_downsample(hr: Tensor, scale: int) -> Tensor:
    """The ``x scale`` bicubic LR of ``hr`` (after :func:`modcrop`), clamped to [0, 1].

    Args:
        hr: ``[C, H, W]`` or ``[B, C, H, W]`` float in [0, 1].
        scale: integer downscaling factor.

    Returns:
        ``[..., C, H // scale, W // scale]``, same dtype and device.
    """
    hr = modcrop(hr, scale)
    batched = hr if hr.ndim == 4 else hr[None]
    h, w = batched.shape[-2:]
    lr = F.interpolate(
        batched, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True
    ).clamp_(0.0, 1.0)
    return lr if hr.ndim == 4 else lr[0]


def random_crop(img: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """A random ``size x size`` crop of ``[C, H, W]`` ``img``.

    Raises:
        ValueError: the image is smaller than the crop (the message gives both sizes; resize
            the image or lower the crop size).
    """
    _check_image(img, "img")
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    h, w = img.shape[-2:]
    if h < size or w < size:
        raise ValueError(
            f"image {h}x{w} is smaller than the {size}x{size} crop; use a smaller crop size "
            "or drop images below it"
        )
    top = int(torch.randint(h - size + 1, (1,), generator=generator))
    left = int(torch.randint(w - size + 1, (1,), generator=generator))
    return img[..., top : top + size, left : left + size]
