"""Roll a behaviour policy out for a fixed number of steps and record the transitions."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onestep.rl.data.dataset import OfflineDataset
from onestep.rl.envs import env_dims, make_env

__all__ = ["rollout"]


def rollout(
    env_id: str, policy: Callable[[np.ndarray], np.ndarray], steps: int, seed: int = 0
) -> tuple[OfflineDataset, list[float]]:
    """Run ``policy`` in ``env_id`` for exactly ``steps`` transitions.

    Episode ``k`` is reset with seed ``seed + k``. The episode running when the budget ends is
    cut there and its last step marked as a timeout (like a time limit: the state is not
    terminal).

    Returns:
        ``(dataset, complete_returns)``: the transitions (metadata empty) and the returns of the
        episodes that ended by termination or the environment's time limit.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    env = make_env(env_id)
    obs_dim, act_dim = env_dims(env)
    cols = {
        "observations": np.zeros((steps, obs_dim), np.float32),
        "actions": np.zeros((steps, act_dim), np.float32),
        "rewards": np.zeros(steps, np.float32),
        "terminals": np.zeros(steps, bool),
        "timeouts": np.zeros(steps, bool),
        "next_observations": np.zeros((steps, obs_dim), np.float32),
    }
    episode, returns, ret = 0, [], 0.0
    obs, _ = env.reset(seed=seed)
    for t in range(steps):
        action = np.asarray(policy(obs[None].astype(np.float32)), np.float32).reshape(act_dim)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        cols["observations"][t], cols["next_observations"][t] = obs, next_obs
        cols["actions"][t], cols["rewards"][t] = action, reward
        cols["terminals"][t], cols["timeouts"][t] = terminated, truncated
        obs, ret = next_obs, ret + float(reward)
        if terminated or truncated:
            returns.append(ret)
            episode, ret = episode + 1, 0.0
            obs, _ = env.reset(seed=seed + episode)
    env.close()
    cols["timeouts"][-1] |= not cols["terminals"][-1]
    return OfflineDataset(**cols, env_id=env_id), returns
