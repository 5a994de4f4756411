"""Small networks of the digits demo: a denoiser and a feature classifier.

The denoiser is behind teacher, student and fake score; the classifier's penultimate features
give the Frechet distance. Both are sized for a 2-core CPU: the demo trains them in seconds.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["DigitsClassifier", "DigitsDenoiserNet", "time_embedding"]


def time_embedding(timestep: Tensor, dim: int, max_period: float = 1000.0) -> Tensor:
    """Sinusoidal embedding of a ``[B]`` time (Vaswani et al. 2017, sec. 3.5; DDPM's time input).

    Args:
        timestep: ``[B]`` network time (the demo feeds ``t`` in [0, 1] times 1000).
        dim: even embedding width.
        max_period: the slowest frequency's period.

    Returns:
        ``[B, dim]``: ``cos`` then ``sin`` of ``timestep`` at geometric frequencies.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period)
        * torch.arange(half, device=timestep.device, dtype=torch.float32)
        / half
    )
    args = timestep.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class _ResBlock(nn.Module):
    """Pre-norm residual MLP block with a time-conditioned scale and shift (FiLM)."""

    def __init__(self, width: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.film = nn.Linear(emb_dim, 2 * width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb).chunk(2, dim=1)
        return h + self.mlp(self.norm(h) * (1 + scale) + shift)


class DigitsDenoiserNet(nn.Module):
    """Residual MLP denoiser over flattened ``[B, C, S, S]`` images, conditioned on time.

    On 8x8 digits an MLP beats a small conv net for the same CPU time: 64 pixels is one token.

    Args:
        size: image side ``S``.
        channels: image channels ``C``.
        width: hidden width.
        depth: number of residual blocks.
        emb_dim: width of the sinusoidal time embedding.
    """

    def __init__(
        self,
        size: int = 8,
        channels: int = 1,
        width: int = 256,
        depth: int = 3,
        emb_dim: int = 64,
    ):
        super().__init__()
        self.size, self.channels, self.emb_dim = size, channels, emb_dim
        dim = channels * size * size
        self.time_mlp = nn.Sequential(
            nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_ResBlock(width, emb_dim) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: Tensor, timestep: Tensor) -> Tensor:
        """Native prediction for ``x`` ``[B, C, S, S]`` at network time ``timestep`` ``[B]``."""
        emb = self.time_mlp(time_embedding(timestep, self.emb_dim))  # (B, E)
        h = self.inp(x.flatten(1))  # (B, width)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h).view_as(x)


class DigitsClassifier(nn.Module):
    """Small conv classifier of 8x8 digits; :meth:`features` is its penultimate layer.

    Layout: conv3x3(1->32) -> SiLU -> conv3x3 stride 2 (32->64) -> SiLU -> flatten ->
    linear(64*4*4 -> ``feature_dim``) -> SiLU  [features]  -> linear(-> 10).

    Args:
        size: image side (8 for the native digits).
        feature_dim: width of the penultimate layer used for the Frechet distance.
    """

    def __init__(self, size: int = 8, feature_dim: int = 64):
        super().__init__()
        if size % 2:
            raise ValueError(f"DigitsClassifier needs an even image size, got {size}")
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(64 * (size // 2) ** 2, feature_dim),
            nn.SiLU(),
        )
        self.head = nn.Linear(feature_dim, 10)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``[B, feature_dim]`` of images ``[B, 1, S, S]`` in [-1, 1]."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``[B, 10]``."""
        return self.head(self.features(x))
