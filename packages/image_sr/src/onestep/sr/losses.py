"""Image-space regression losses of the SR methods: MSE plus a perceptual term.

OSEDiff (Wu et al. 2024, eq. 5) trains on ``MSE + lambda_1 LPIPS``. LPIPS needs pretrained
backbone weights, which this package never downloads: :func:`perceptual_loss` uses LPIPS only when
the user names a local folder holding them; otherwise an offline substitute, SSIM plus an image-
gradient L1 (both differentiable, both written here), that the run's log names. Every loss returns
the unreduced per-sample ``[B]`` value (house rule).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PERCEPTUAL", "gradient_l1", "perceptual_loss", "ssim_loss"]

PERCEPTUAL = ("auto", "lpips", "ssim-grad", "none")
LossFn = Callable[[Tensor, Tensor], Tensor]


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_loss(x: Tensor, y: Tensor, c1: float = 0.01**2, c2: float = 0.03**2) -> Tensor:
    """``1 - SSIM(x, y)`` per image (Wang et al. 2004, eq. 13; 11x11 Gaussian window, sigma 1.5).

    Images in [0, 1], ``[B, C, H, W]``; computed per channel and averaged; valid (unpadded)
    windows only, so images need sides of at least 11.
    """
    c = x.shape[1]
    win = _gaussian_window().to(x).expand(c, 1, -1, -1)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, win, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return 1.0 - ssim.flatten(1).mean(1)


def gradient_l1(x: Tensor, y: Tensor) -> Tensor:
    """Mean absolute difference of horizontal and vertical finite differences, per image."""
    dx = (x[..., :, 1:] - x[..., :, :-1]) - (y[..., :, 1:] - y[..., :, :-1])
    dy = (x[..., 1:, :] - x[..., :-1, :]) - (y[..., 1:, :] - y[..., :-1, :])
    return dx.abs().flatten(1).mean(1) + dy.abs().flatten(1).mean(1)


def _ssim_grad(x: Tensor, y: Tensor) -> Tensor:
    return ssim_loss(x, y) + gradient_l1(x, y)


def _lpips(weights: str) -> LossFn:
    """Pyiqa's LPIPS as a loss, from weights in a local folder (never downloaded)."""
    from onestep.sr.metrics.learned import build_learned  # lazy: pyiqa takes seconds to import

    return build_learned("lpips", weights, "cpu", as_loss=True)


def perceptual_loss(
    kind: str = "auto", lpips_weights: str | None = None
) -> tuple[str, LossFn | None]:
    """``(name, fn)`` of the perceptual term; ``fn(sr, hr) -> [B]`` on images in [0, 1].

    Args:
        kind: ``lpips`` (needs ``lpips_weights``), ``ssim-grad`` (offline substitute),
            ``none``, or ``auto``: LPIPS when ``lpips_weights`` is given, else ``ssim-grad``.
        lpips_weights: a local folder with LPIPS weights (file names in
            :data:`onestep.sr.metrics.LEARNED_WEIGHTS`).
    """
    if kind not in PERCEPTUAL:
        raise ValueError(f"unknown perceptual loss {kind!r}; use one of {PERCEPTUAL}")
    if kind == "auto":
        kind = "lpips" if lpips_weights else "ssim-grad"
    if kind == "lpips":
        if not lpips_weights:
            raise ValueError(
                "perceptual='lpips' needs lpips_weights=<local folder with its weights>"
            )
        return "lpips", _lpips(lpips_weights)
    if kind == "ssim-grad":
        return "ssim-grad", _ssim_grad
    return "none", None
