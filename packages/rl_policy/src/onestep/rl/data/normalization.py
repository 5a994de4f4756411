"""Observation and reward normalisation, as the offline RL papers do it.

Observations: per-feature mean and std over the dataset, std floored at ``min_std`` (TD3+BC,
Fujimoto & Gu 2021, adds 1e-3 to the std instead; the two agree wherever std >> 1e-3). The data
module returns raw observations plus these statistics; agents normalise inside their networks so
that the evaluation environment's raw observations go through the same transform.

Rewards (``method``):

* ``"none"``: raw rewards. Diffusion-QL (Wang et al. 2023) trains on raw locomotion rewards.
* ``"iql"``: ``r * 1000 / (max episode return - min episode return)`` for locomotion, as IQL
  (Kostrikov et al. 2022, ``train_offline.py: normalize``) and the flow-policy work built on its
  D4RL pipeline do; it makes the reward scale comparable across tasks and datasets.
* ``"antmaze"``: ``r - 1`` for sparse AntMaze-style goals (IQL's AntMaze setting).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from onestep.rl.data.dataset import OfflineDataset

__all__ = ["REWARD_METHODS", "normalize_rewards", "observation_stats", "reward_transform"]

REWARD_METHODS = ("none", "iql", "antmaze")


def observation_stats(
    dataset: OfflineDataset, min_std: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` of the observations, each ``[obs_dim]`` float32, std >= ``min_std``."""
    obs = dataset.observations.astype(np.float64)
    mean, std = obs.mean(axis=0), obs.std(axis=0)
    return mean.astype(np.float32), np.maximum(std, min_std).astype(np.float32)


def reward_transform(dataset: OfflineDataset, method: str = "none") -> tuple[float, float]:
    """``(scale, shift)`` with normalised reward ``r * scale + shift`` for ``method``.

    Raises:
        ValueError: unknown method, or ``"iql"`` on data whose episode returns are all equal.
    """
    if method == "none":
        return 1.0, 0.0
    if method == "antmaze":
        return 1.0, -1.0
    if method == "iql":
        returns = dataset.episode_returns()
        spread = float(returns.max() - returns.min()) if len(returns) else 0.0
        if not spread > 0:
            raise ValueError(
                f"{dataset.source or 'dataset'}: 'iql' reward normalisation divides by "
                f"max - min episode return, which is {spread} over {len(returns)} episode(s); "
                "use normalize_rewards='none'"
            )
        return 1000.0 / spread, 0.0
    raise ValueError(f"unknown reward normalisation {method!r}; choose from {REWARD_METHODS}")


def normalize_rewards(dataset: OfflineDataset, method: str = "none") -> OfflineDataset:
    """A copy of ``dataset`` with rewards ``r * scale + shift`` (see :func:`reward_transform`)."""
    scale, shift = reward_transform(dataset, method)
    rewards = (dataset.rewards.astype(np.float64) * scale + shift).astype(np.float32)
    return replace(dataset, rewards=rewards, metadata=dict(dataset.metadata))
