"""The 2-D multimodal bandit of Diffusion-QL's toy experiment (Wang et al. 2023).

One state; a 2-D action in [-1, 1]^2. The behaviour policy is a mixture of four Gaussians
(std 0.05) at ``(+-0.8, +-0.8)``; each mode pays a Gaussian reward ``N(mu_k, 0.5)`` with
``mu = 3.0, 0.0, 1.5, 5.0`` for the modes ``(-0.8, 0.8), (-0.8, -0.8), (0.8, 0.8), (0.8, -0.8)``
(the public toy code). Every transition is terminal (``done = 1``), so the critic is a pure
reward regression ``Q(s, a) = E[r | a]``. Pure behaviour cloning should cover all four modes;
a growing Q weight should pull the policy onto the best mode ``(0.8, -0.8)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from onestep.core.metrics import ModeCoverage, mode_coverage

__all__ = [
    "BANDIT_MODES",
    "BANDIT_REWARDS",
    "BanditBatches",
    "bandit_coverage",
    "bandit_dataset",
    "bandit_modes",
    "bandit_rewards",
]

BANDIT_MODES: tuple[tuple[float, float], ...] = ((-0.8, 0.8), (-0.8, -0.8), (0.8, 0.8), (0.8, -0.8))
BANDIT_REWARDS: tuple[float, ...] = (3.0, 0.0, 1.5, 5.0)  # mean reward of each mode


def bandit_modes() -> Tensor:
    """The four behaviour modes, ``[4, 2]``."""
    return torch.tensor(BANDIT_MODES)


def bandit_rewards() -> Tensor:
    """Mean reward of each mode, ``[4]`` (same order as :func:`bandit_modes`)."""
    return torch.tensor(BANDIT_REWARDS)


def bandit_dataset(
    n: int = 10_000,
    seed: int = 0,
    *,
    obs_dim: int = 2,
    std: float = 0.05,
    reward_std: float = 0.5,
) -> dict[str, Tensor]:
    """``n`` offline transitions of the bandit, in the agents' batch layout (float32).

    Each mode contributes ``n / 4`` actions ``N(mode, std^2 I)`` clipped to [-1, 1] (shuffled),
    with reward ``N(mu_mode, reward_std^2)``; ``obs = next_obs = 0``, ``done = 1``.

    Args:
        n: number of transitions (a multiple of 4).
        seed: seed of the draws.
        obs_dim: size of the constant observation (Diffusion-QL's toy: 2).
        std: standard deviation of each behaviour mode.
        reward_std: standard deviation of the reward around each mode's mean.

    Returns:
        ``{"obs" [n, obs_dim], "action" [n, 2], "reward" [n], "next_obs" [n, obs_dim],
        "done" [n]}`` plus ``"mode" [n]`` (long), the behaviour mode of each action.
    """
    if n < 4 or n % 4:
        raise ValueError(f"n must be a positive multiple of 4 (equal modes), got {n}")
    g = torch.Generator().manual_seed(seed)
    mode = torch.arange(4).repeat_interleave(n // 4)
    mode = mode[torch.randperm(n, generator=g)]
    action = bandit_modes()[mode] + std * torch.randn(n, 2, generator=g)
    reward = bandit_rewards()[mode] + reward_std * torch.randn(n, generator=g)
    obs = torch.zeros(n, obs_dim)
    return {
        "obs": obs,
        "action": action.clamp(-1.0, 1.0),
        "reward": reward,
        "next_obs": obs.clone(),
        "done": torch.ones(n),
        "mode": mode,
    }


def bandit_coverage(
    actions: Tensor, radius: float = 0.2, min_fraction: float = 0.05
) -> ModeCoverage:
    """Fraction of ``actions`` ``[N, 2]`` within ``radius`` of each mode (core's mode coverage).

    Args:
        actions: sampled actions ``[N, 2]``.
        radius: acceptance radius around each mode (4 behaviour stds by default).
        min_fraction: a mode counts as covered when it holds at least this fraction.
    """
    return mode_coverage(actions, bandit_modes(), radius=radius, min_fraction=min_fraction)


class BanditBatches(IterableDataset):
    """Random minibatches of a transition dict, forever (use with ``batch_size=None``).

    Args:
        data: a dict of equally long tensors, e.g. :func:`bandit_dataset`.
        batch_size: rows per batch.
        seed: seed of the row draws (each epoch of iteration restarts it).
        keys: the keys to yield (the agents' batch layout by default).
    """

    def __init__(
        self,
        data: dict[str, Tensor],
        batch_size: int = 256,
        seed: int = 0,
        keys: tuple[str, ...] = ("obs", "action", "reward", "next_obs", "done"),
    ):
        super().__init__()
        self.data = {k: data[k] for k in keys}
        self.size = next(iter(self.data.values())).shape[0]
        self.batch_size, self.seed = batch_size, seed

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        g = torch.Generator().manual_seed(self.seed)
        while True:
            idx = torch.randint(self.size, (self.batch_size,), generator=g)
            yield {k: v[idx] for k, v in self.data.items()}
