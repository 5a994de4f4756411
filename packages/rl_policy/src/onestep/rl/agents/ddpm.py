"""The short discrete VP diffusion chain of Diffusion-QL (Wang et al. 2023, sec. 3).

Diffusion-QL's "vp" schedule (the variance-preserving SDE of Song et al. 2021, discretised) with
``T = 5`` steps: ``beta_k = 1 - exp(-b_min / T - (b_max - b_min) (2k - 1) / (2 T^2))`` for
``k = 1..T``. The forward noising ``a_k = sqrt(abar_k) a + sqrt(1 - abar_k) e`` is core's
:class:`~onestep.core.noise.VPTable` on that table (step ``k`` at ``t = k / (T - 1)``); the
reverse step is DDPM's ancestral step (Ho et al. 2020, eq. 6-7, 11) with the predicted clean
action clipped to [-1, 1], as Diffusion-QL's code does. The chain is differentiable end to end:
Diffusion-QL's Q term back-propagates through all ``T`` steps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from onestep.core.noise import VPTable

__all__ = ["VPChain", "vp_betas"]


def vp_betas(steps: int, b_min: float = 0.1, b_max: float = 10.0) -> Tensor:
    """Diffusion-QL's ``vp_beta_schedule``: ``[T]`` betas in float64."""
    k = torch.arange(1, steps + 1, dtype=torch.float64)
    alpha = torch.exp(-b_min / steps - 0.5 * (b_max - b_min) * (2 * k - 1) / steps**2)
    return 1.0 - alpha


class VPChain(nn.Module):
    """Coefficients of a ``T``-step VP chain; no parameters (buffers only).

    Args:
        steps: ``T`` (Diffusion-QL: 5 for D4RL).
        b_min: ``beta_min`` of the VP SDE.
        b_max: ``beta_max`` of the VP SDE.
    """

    sqrt_recip_ac: Tensor
    sqrt_recipm1_ac: Tensor
    coef_x0: Tensor
    coef_xt: Tensor
    sigma: Tensor

    def __init__(self, steps: int = 5, b_min: float = 0.1, b_max: float = 10.0):
        super().__init__()
        if steps < 2:
            raise ValueError(f"a VP chain needs at least 2 steps, got {steps}")
        self.steps = steps
        betas = vp_betas(steps, b_min, b_max)
        ac = torch.cumprod(1.0 - betas, 0)  # abar_k
        ac_prev = torch.cat([torch.ones(1, dtype=ac.dtype), ac[:-1]])
        self.process = VPTable(ac)
        # Posterior q(a_{k-1} | a_k, a_0) (Ho et al. 2020, eq. 6-7).
        var = betas * (1.0 - ac_prev) / (1.0 - ac)
        buffers = {
            "sqrt_recip_ac": torch.sqrt(1.0 / ac),
            "sqrt_recipm1_ac": torch.sqrt(1.0 / ac - 1.0),
            "coef_x0": betas * torch.sqrt(ac_prev) / (1.0 - ac),
            "coef_xt": (1.0 - ac_prev) * torch.sqrt(1.0 - betas) / (1.0 - ac),
            # exp(0.5 log var) with the log clipped at 1e-20, as Diffusion-QL (var_0 = 0).
            "sigma": torch.exp(0.5 * torch.log(var.clamp(min=1e-20))),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.to(torch.float32), persistent=False)

    def time(self, k: Tensor) -> Tensor:
        """Step index ``k`` (``0..T-1``) as a time in [0, 1] (the network's time input)."""
        return k.to(torch.float32) / (self.steps - 1)

    def add_noise(self, a: Tensor, e: Tensor, k: Tensor) -> Tensor:
        """``a_k = sqrt(abar_k) a + sqrt(1 - abar_k) e`` for step indices ``k`` ``[B]``."""
        return self.process.add_noise(a, e, self.time(k).to(a))

    def step(self, eps_hat: Tensor, x: Tensor, k: int, noise: Tensor | None) -> Tensor:
        """One ancestral step ``a_k -> a_{k-1}`` given the predicted noise (differentiable).

        ``a_0_hat = clip(a_k / sqrt(abar_k) - sqrt(1 / abar_k - 1) eps_hat)`` (Ho et al. eq. 11
        rearranged), then the posterior mean plus ``sigma_k noise`` (no noise at ``k = 0``).
        """
        x0 = (self.sqrt_recip_ac[k] * x - self.sqrt_recipm1_ac[k] * eps_hat).clamp(-1.0, 1.0)
        mean = self.coef_x0[k] * x0 + self.coef_xt[k] * x
        if k == 0 or noise is None:
            return mean
        return mean + self.sigma[k] * noise

    def sample(self, eps_net: nn.Module, s: Tensor, noise: Tensor) -> Tensor:
        """Run the reverse chain; ``noise`` ``[B, T, act_dim]``: ``a_T`` then steps ``T-1..1``.

        Returns the final action (clipped to [-1, 1]), with the graph through every step.
        """
        n, steps = noise.shape[0], self.steps
        if noise.ndim != 3 or noise.shape[1] != steps:
            raise ValueError(f"noise must be [B, {steps}, act_dim], got {tuple(noise.shape)}")
        x = noise[:, 0]
        for j, k in enumerate(reversed(range(steps))):
            kk = torch.full((n,), k, device=s.device)
            eps_hat = eps_net(x, s, self.time(kk).to(x))
            x = self.step(eps_hat, x, k, noise[:, j + 1] if k > 0 else None)
        return x.clamp(-1.0, 1.0)
