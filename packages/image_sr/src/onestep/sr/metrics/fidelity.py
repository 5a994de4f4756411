"""PSNR and SSIM on the Y channel (via pyiqa) and NIQE (via BasicSR), as SR papers report them.

The SR convention (SRCNN onwards; BasicSR's ``calculate_psnr`` / ``calculate_ssim`` with
``test_y_channel=True``) compares the luma ``Y`` of ITU-R BT.601 YCbCr in studio range,
``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for RGB in [0, 1] (so Y is in [16, 235] of 255),
after removing ``crop_border`` pixels (usually the scale) from every side.

pyiqa 0.1.16 facts this module relies on (checked by the tests):

* ``test_y_channel=True`` alone converts with ``color_space="yiq"`` (NTSC luma
  0.299 R + 0.587 G + 0.114 B, full range), **not** BT.601 YCbCr; we pass ``color_space="ycbcr"``.
* ``crop_border=c`` slices ``[c:-c, c:-c]`` before the conversion, as BasicSR does.
* PSNR uses ``data_range=1`` and ``mse + 1e-8``, so identical images score 80 dB, not infinity.
* SSIM rounds Y to integers in [0, 255] first (like MATLAB on 8-bit images), uses the 11x11
  Gaussian window with sigma 1.5 and "valid" filtering: it needs at least 11 x 11 pixels after
  the crop.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["NIQE_BLOCK", "MetricSkippedError", "build_psnr_ssim", "niqe"]

NIQE_BLOCK = 96
"""NIQE's patch side (Mittal et al. 2013): features are fitted over non-overlapping 96x96 blocks."""

SSIM_WINDOW = 11


class MetricSkippedError(Exception):
    """A metric cannot be computed on this input (e.g. too small); the message says why."""


def build_psnr_ssim(
    name: str, crop_border: int, device: str | torch.device
) -> Callable[..., Tensor]:
    """Build pyiqa's ``psnr`` or ``ssim`` on BT.601 Y with ``crop_border``: ``f(sr, hr) -> [B]``."""
    import pyiqa  # lazy: seconds to import

    metric = pyiqa.create_metric(
        name, device=device, test_y_channel=True, color_space="ycbcr", crop_border=crop_border
    )
    min_side = 2 * crop_border + (SSIM_WINDOW if name == "ssim" else 1)

    def compute(sr: Tensor, hr: Tensor) -> Tensor:
        h, w = sr.shape[-2:]
        if min(h, w) < min_side:
            raise MetricSkippedError(
                f"{name} needs images of at least {min_side}x{min_side} pixels with "
                f"crop_border={crop_border}, got {h}x{w}"
            )
        return metric(sr, hr).reshape(sr.shape[0])

    return compute


def niqe(sr: Tensor) -> Tensor:
    """NIQE of each image (Mittal et al. 2013, "Making a 'completely blind' quality analyzer").

    BasicSR's ``calculate_niqe`` reproduces the official MATLAB code (its docstring: 5.7296 on
    baboon in both) with the pristine model it ships (``niqe_pris_params.npz``), so it works
    offline. Its input convention is an ``[H, W, C]`` **BGR** array in [0, 255]; it converts to
    BT.601 Y, rounds to integers, and crops to whole 96x96 blocks. No pixels are cropped at the
    border here (no-reference: no misregistration to hide; pyiqa's ``niqe`` does the same).

    The fit of a Gaussian to the block features needs at least two blocks, i.e.
    ``floor(H / 96) * floor(W / 96) >= 2`` (192x96 or 96x192 at least); a smaller batch raises
    :class:`MetricSkippedError`. A flat image has undefined features and scores NaN.

    Args:
        sr: ``[B, 3, H, W]`` RGB in [0, 1].

    Returns:
        ``[B]`` float64; lower is better.
    """
    from basicsr.metrics.niqe import calculate_niqe  # lazy: seconds to import

    h, w = sr.shape[-2:]
    if (h // NIQE_BLOCK) * (w // NIQE_BLOCK) < 2:
        raise MetricSkippedError(
            f"niqe needs at least two {NIQE_BLOCK}x{NIQE_BLOCK} blocks (e.g. 192x96), got {h}x{w}"
        )
    images = (sr.detach().double().cpu() * 255.0).permute(0, 2, 3, 1).numpy()  # (B, H, W, RGB)
    scores = []
    for rgb in images:
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        with warnings.catch_warnings():  # a flat image warns about empty means, then gives NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                score = calculate_niqe(bgr, crop_border=0, input_order="HWC", convert_to="y")
            except np.linalg.LinAlgError:  # degenerate feature covariance
                score = math.nan
        scores.append(score)
    return torch.tensor(scores, dtype=torch.float64)
