"""Behaviour policies as plain callables ``obs [B, obs_dim] -> actions [B, act_dim]`` in [-1, 1].

The same signature as :func:`~onestep.rl.evaluation.evaluate_policy`'s ``act_fn``, so a
behaviour policy can be evaluated, rolled out or saved alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from onestep.rl.behavior.sac import Actor

__all__ = ["ActorPolicy", "RandomPolicy", "load_actor", "save_actor"]


class RandomPolicy:
    """Uniform actions in ``[-1, 1]^act_dim`` (D4RL's "random" datasets)."""

    def __init__(self, act_dim: int, seed: int = 0):
        self.act_dim, self.rng = act_dim, np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """``[B, act_dim]`` float32."""
        return self.rng.uniform(-1.0, 1.0, (len(obs), self.act_dim)).astype(np.float32)


class ActorPolicy:
    """A SAC actor's deterministic action ``tanh(mu(s))`` plus Gaussian noise, clipped to [-1, 1].

    Args:
        actor: the trained actor.
        noise_std: std of the added Gaussian noise (0: deterministic).
        seed: seed of the noise.
    """

    def __init__(self, actor: Actor, noise_std: float = 0.0, seed: int = 0):
        self.actor, self.noise_std = actor.eval(), noise_std
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """``[B, act_dim]`` float32."""
        with torch.no_grad():
            action = self.actor.mean_action(torch.as_tensor(obs, dtype=torch.float32)).numpy()
        if self.noise_std > 0:
            action = action + self.noise_std * self.rng.standard_normal(action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def save_actor(actor: Actor, path: str | Path, **info: Any) -> Path:
    """Save an actor's weights and shape, plus plain ``info``, for :func:`load_actor`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "kind": "onestep-rl/sac-actor",
            "obs_dim": actor.obs_dim,
            "act_dim": actor.act_dim,
            "hidden": actor.hidden,
            "layers": actor.layers,
            "state_dict": actor.state_dict(),
            "info": info,
        },
        path,
    )
    return path


def load_actor(path: str | Path) -> tuple[Actor, dict[str, Any]]:
    """``(actor, info)`` from a file written by :func:`save_actor`."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise ValueError(f"{path}: cannot read the behaviour policy: {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "onestep-rl/sac-actor":
        raise ValueError(f"{path}: not an onestep-rl SAC actor checkpoint")
    actor = Actor(ckpt["obs_dim"], ckpt["act_dim"], ckpt["hidden"], ckpt["layers"])
    actor.load_state_dict(ckpt["state_dict"])
    return actor, dict(ckpt["info"])
