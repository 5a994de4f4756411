"""Networks shared by the offline-RL agents: state-conditioned action MLPs and twin Q critics.

All networks take *normalised* observations (the agent normalises once, see
:meth:`onestep.rl.agents.base.OfflineAgent.normalize`). Activations are Mish, as in
Diffusion-QL's public noise predictor and critics (Wang et al. 2023); FQL's JAX code uses GELU.
We keep one family so that the three agents differ only in their losses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConditionalMLP", "Mish", "TimeEmbedding", "TwinQ", "mlp"]


class Mish(nn.Module):
    """``x tanh(softplus(x))`` (Misra 2019), written out.

    Same function as ``nn.Mish``; the composite is faster on CPUs in torch 2.x, forward, backward
    and under ``torch.func.jvp`` (whose rule for the fused kernel runs a Python decomposition).
    """

    def forward(self, x: Tensor) -> Tensor:
        """Elementwise Mish."""
        return x * torch.tanh(F.softplus(x))


def mlp(
    in_dim: int, out_dim: int, hidden: int, depth: int, layer_norm: bool = False
) -> nn.Sequential:
    """``depth`` hidden layers ``Linear -> Mish [-> LayerNorm]`` and a linear output layer.

    FQL's critics put LayerNorm after the activation (Park et al. 2025, public code:
    ``layer_norm=True`` for the value networks); ``layer_norm=False`` is Diffusion-QL's plain MLP.
    """
    if depth < 1 or hidden < 1:
        raise ValueError(f"mlp needs depth >= 1 and hidden >= 1, got depth={depth}, {hidden=}")
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), Mish()]
        if layer_norm:
            layers.append(nn.LayerNorm(hidden))
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of a time followed by a small MLP (Diffusion-QL's ``time_mlp``).

    ``t`` (``[B]``, in [0, 1]) enters as ``sin(f t), cos(f t)`` with ``dim / 2`` frequencies
    spaced geometrically from ``1 / 8`` to ``max_freq`` (Vaswani et al. 2017, sec. 3.5), then
    ``Linear(dim, 2 dim) -> Mish -> Linear(2 dim, dim)``. The frequencies are low on purpose:
    MeanFlow's target differentiates the network in ``t`` (``torch.func.jvp``), and fast time
    features make ``du/dt`` rough. With features up to 1000 the OFQL behaviour-cloning loss
    diverged on the bandit; core's MeanFlow benchmark measured the same (its ``max_freq`` 1-2
    beat 8). Diffusion-QL feeds integer steps to frequencies <= 1 and FQL feeds raw ``t``, so
    low frequencies change nothing for them.

    Args:
        dim: size of the embedding (even).
        max_freq: highest frequency of the features.
    """

    freqs: Tensor  # (dim / 2,), buffer

    def __init__(self, dim: int = 16, max_freq: float = 2.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"time embedding size must be an even number >= 2, got {dim}")
        if max_freq <= 0.125:
            raise ValueError(f"max_freq must exceed the lowest frequency 1/8, got {max_freq}")
        freqs = torch.exp(torch.linspace(math.log(0.125), math.log(max_freq), dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)
        self.net = nn.Sequential(nn.Linear(dim, 2 * dim), Mish(), nn.Linear(2 * dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        """``[B] -> [B, dim]``."""
        angle = t[:, None] * self.freqs.to(t.dtype)  # (B, dim / 2)
        return self.net(torch.cat([torch.sin(angle), torch.cos(angle)], dim=1))


class ConditionalMLP(nn.Module):
    """``f(a, s, t_1, ..., t_n) -> [B, act_dim]``: an action-space field conditioned on the state.

    One class for every actor network: ``n_times = 0`` is FQL's one-step policy ``mu(s, z)``;
    ``n_times = 1`` is Diffusion-QL's noise predictor ``eps(a_k, k | s)`` or FQL's BC velocity
    ``v(a_t, t | s)``; ``n_times = 2`` is OFQL's average velocity ``u(a_t, r, t | s)``, fed
    ``(t, t - r)`` (MeanFlow, Geng et al. 2025, Table 1c). Each time has its own embedding.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        n_times: number of scalar time inputs.
        hidden: hidden width.
        depth: number of hidden layers.
        time_dim: size of each time embedding.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_times: int,
        hidden: int = 256,
        depth: int = 3,
        time_dim: int = 16,
    ):
        super().__init__()
        self.obs_dim, self.act_dim, self.n_times = obs_dim, act_dim, n_times
        self.times = nn.ModuleList(TimeEmbedding(time_dim) for _ in range(n_times))
        self.net = mlp(act_dim + obs_dim + n_times * time_dim, act_dim, hidden, depth)

    def forward(self, a: Tensor, s: Tensor, *times: Tensor) -> Tensor:
        """``a``: ``[B, act_dim]``, ``s``: ``[B, obs_dim]`` (normalised), each time ``[B]``."""
        if len(times) != self.n_times:
            raise ValueError(f"this network takes {self.n_times} time inputs, got {len(times)}")
        feats = [emb(t.to(a.dtype)) for emb, t in zip(self.times, times, strict=True)]
        return self.net(torch.cat([a, s, *feats], dim=1))


class TwinQ(nn.Module):
    """Two independent critics ``Q_1(s, a), Q_2(s, a)`` (clipped double Q, Fujimoto et al. 2018).

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden: hidden width.
        depth: number of hidden layers.
        layer_norm: LayerNorm after each activation (FQL's critics).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int = 256,
        depth: int = 3,
        layer_norm: bool = False,
    ):
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, 1, hidden, depth, layer_norm)
        self.q2 = mlp(obs_dim + act_dim, 1, hidden, depth, layer_norm)

    def forward(self, s: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """``(Q_1, Q_2)``, each ``[B]``."""
        x = torch.cat([s, a], dim=1)
        return self.q1(x).squeeze(1), self.q2(x).squeeze(1)
