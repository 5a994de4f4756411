"""Colour correction of a super-resolved image towards its LR input.

Diffusion-based SR drifts in colour: the VAE round trip and a few denoising steps shift low
frequencies (hue, brightness of flat areas) while the textures they add are what we want to keep.
Both fixes below take the SR output and a *reference* on the same HR grid, in practice the
bicubic-upsampled LR (:func:`onestep.sr.resolver.upsample`), whose colours are right but whose
details are missing:

* :func:`wavelet_color_fix` keeps the high-frequency band of ``sr`` and takes the low-frequency
  band of ``reference`` (StableSR, Wang et al. 2023, Sec. 3.4 "colour correction"; OSEDiff,
  Wu et al. 2024, uses the same fix at inference);
* :func:`adain_color_fix` matches per-image, per-channel mean and standard deviation (AdaIN,
  Huang & Belongie 2017, eq. 8), a cheaper global version.

Outputs are not clamped (a fix may push a few values slightly outside [0, 1]);
:func:`onestep.sr.upscale.upscale` clamps after fixing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["COLOR_FIXES", "adain_color_fix", "wavelet_color_fix", "wavelet_decompose"]

# The separable [1, 2, 1] / 4 binomial kernel: the "a trous" (with holes) B-spline-like blur of
# the stationary wavelet transform (Starck & Murtagh, "Astronomical Image and Data Analysis").
_BINOMIAL = (0.25, 0.5, 0.25)


def _check_pair(sr: Tensor, reference: Tensor) -> None:
    if sr.ndim != 4:
        raise ValueError(f"expected an SR batch [B, C, H, W], got shape {tuple(sr.shape)}")
    if sr.shape != reference.shape:
        raise ValueError(
            f"sr {tuple(sr.shape)} and reference {tuple(reference.shape)} differ in shape; "
            "pass the LR upsampled to the SR size (onestep.sr.resolver.upsample(lr, scale))"
        )


def _dilated_blur(x: Tensor, dilation: int) -> Tensor:
    """3x3 binomial blur with holes of ``dilation`` pixels, replicate-padded; ``[B, C, H, W]``."""
    c = x.shape[1]
    k1 = torch.tensor(_BINOMIAL, dtype=x.dtype, device=x.device)
    kernel = (k1[:, None] * k1[None, :]).expand(c, 1, 3, 3)  # depthwise, sums to 1
    padded = F.pad(x, (dilation,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, dilation=dilation, groups=c)


def wavelet_decompose(x: Tensor, levels: int = 5) -> tuple[Tensor, Tensor]:
    """Split ``x`` into a high-frequency and a low-frequency band, ``x == high + low`` exactly.

    The stationary ("a trous") wavelet transform: level ``i`` blurs the running low band with the
    binomial kernel dilated by ``2^i``; the detail removed at each level is added to ``high``.
    After ``levels`` levels the low band holds structures larger than about ``2^levels`` pixels.

    Args:
        x: ``[B, C, H, W]``.
        levels: number of dilated blurs; 5 (StableSR's choice) keeps roughly what is wider than
            32 pixels in ``low``.

    Returns:
        ``(high, low)``, each ``[B, C, H, W]``.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    low = x
    high = torch.zeros_like(x)
    for i in range(levels):
        blurred = _dilated_blur(low, 2**i)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_color_fix(sr: Tensor, reference: Tensor, levels: int = 5) -> Tensor:
    """Give ``sr`` the low-frequency band of ``reference`` and keep its own high frequencies.

    Args:
        sr: super-resolved batch ``[B, 3, H, W]``.
        reference: same shape, usually the bicubic-upsampled LR.
        levels: decomposition depth, see :func:`wavelet_decompose`.

    Returns:
        ``high(sr) + low(reference)``, ``[B, 3, H, W]``, not clamped.
    """
    _check_pair(sr, reference)
    sr_high, _ = wavelet_decompose(sr, levels)
    _, ref_low = wavelet_decompose(reference, levels)
    return sr_high + ref_low


def adain_color_fix(sr: Tensor, reference: Tensor, eps: float = 1e-5) -> Tensor:
    """Match each image's per-channel mean and standard deviation to ``reference`` (AdaIN).

    Args:
        sr: super-resolved batch ``[B, C, H, W]``.
        reference: same shape, usually the bicubic-upsampled LR.
        eps: added to the standard deviation of ``sr`` so flat channels do not divide by zero.

    Returns:
        ``(sr - mean_sr) / (std_sr + eps) * std_ref + mean_ref`` per image and channel, not
        clamped; ``[B, C, H, W]``.
    """
    _check_pair(sr, reference)
    dims = (2, 3)
    # Population std (correction=0): the moments the output is supposed to reproduce.
    sr_std, sr_mean = torch.std_mean(sr, dim=dims, correction=0, keepdim=True)  # (B, C, 1, 1)
    ref_std, ref_mean = torch.std_mean(reference, dim=dims, correction=0, keepdim=True)
    return (sr - sr_mean) / (sr_std + eps) * ref_std + ref_mean


COLOR_FIXES = {"wavelet": wavelet_color_fix, "adain": adain_color_fix}
"""The ``color_fix`` choices of :func:`onestep.sr.upscale.upscale` and ``onestep-sr upscale``."""
