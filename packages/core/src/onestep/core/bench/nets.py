"""Small networks of the 2-D benchmark: the one-step generator and a noisy-sample discriminator.

The fake score is a :func:`~onestep.core.testing.tiny_denoiser`-style :class:`TinyMLP` wrapped as
a rectified-flow :class:`~onestep.core.denoiser.Denoiser` (see :func:`build_fake_score`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from onestep.core.denoiser import Denoiser
from onestep.core.noise import NoiseProcess
from onestep.core.testing import TinyMLP

__all__ = ["MLPGenerator", "NoisyDiscriminator", "build_fake_score"]


def _mlp(d_in: int, d_out: int, hidden: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, hidden), nn.SiLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(hidden, hidden), nn.SiLU()]
    layers.append(nn.Linear(hidden, d_out))
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """One-step student ``G(z) -> x`` for ``[B, D]`` data: a plain MLP from latent to sample.

    Args:
        dim: data (and latent) dimension ``D``.
        hidden: hidden width.
        depth: hidden layers.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3):
        super().__init__()
        if depth < 1 or hidden < 1:
            raise ValueError(f"need depth >= 1 and hidden >= 1, got {depth}, {hidden}")
        self.dim = dim
        self.net = _mlp(dim, dim, hidden, depth)

    def forward(self, z: Tensor) -> Tensor:
        """Samples ``[B, D]`` from latents ``z`` ``[B, D]`` (one network evaluation)."""
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"z must be [B, {self.dim}], got {tuple(z.shape)}")
        return self.net(z)


class NoisyDiscriminator(nn.Module):
    """Logit ``D(x_t, t)`` separating noised real from noised student samples.

    Trained with the logistic loss, its optimal logit is ``log p_t(x_t) / q_t(x_t)``, the density
    ratio f-distill weights the distribution-matching gradient with (Xu et al. 2025, sec. 3).

    Args:
        dim: data dimension ``D``.
        hidden: hidden width.
    """

    def __init__(self, dim: int = 2, hidden: int = 128):
        super().__init__()
        self.body = TinyMLP(dim, hidden=hidden)
        self.head = nn.Linear(dim, 1)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Logits ``[B]``."""
        return self.head(torch.nn.functional.silu(self.body(x_t, t))).squeeze(-1)


def build_fake_score(process: NoiseProcess, dim: int = 2, hidden: int = 128) -> Denoiser:
    """The trainable fake score: a :class:`TinyMLP` with native ``flow`` prediction.

    Flow prediction keeps ``x0 = x_t - t v`` well conditioned at every ``t`` of rectified flow,
    including ``t = 1`` where the student starts.
    """
    return Denoiser(TinyMLP(dim, hidden=hidden), process, prediction="flow")
