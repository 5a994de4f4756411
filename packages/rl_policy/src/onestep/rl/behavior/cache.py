"""Trained behaviour policies on disk, so later collections reuse one SAC run.

A run is keyed by environment, training steps, seed and a hash of the SAC hyperparameters
(``Hopper-v5_steps100000_seed0_1a2b3c4d.pt``) and holds the final actor, every evaluation
snapshot and the replay buffer: all that the ``expert``, ``medium``, ``medium-expert`` and
``replay`` datasets need. Default folder: ``$ONESTEP_RL_CACHE`` or ``~/.cache/onestep-rl/behavior``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from onestep.rl.behavior.sac import Actor, SACConfig, SACRun, Snapshot, train_sac
from onestep.rl.data.dataset import OfflineDataset

__all__ = ["cache_path", "default_cache_dir", "load_run", "save_run", "trained_run"]

_KIND = "onestep-rl/sac-run"
_REPLAY = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")


def default_cache_dir() -> Path:
    """``$ONESTEP_RL_CACHE`` or ``~/.cache/onestep-rl/behavior``."""
    env = os.environ.get("ONESTEP_RL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "onestep-rl" / "behavior"


def cache_path(
    cache_dir: str | Path, env_id: str, steps: int, seed: int, config: SACConfig
) -> Path:
    """Where the run for these settings is stored."""
    digest = hashlib.sha1(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:8]
    name = f"{env_id.replace('/', '_')}_steps{steps}_seed{seed}_{digest}.pt"
    return Path(cache_dir) / name


def save_run(run: SACRun, path: str | Path) -> Path:
    """Write ``run`` (actor, snapshots, replay buffer, timing) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    actor = run.actor
    torch.save(
        {
            "kind": _KIND,
            "env_id": run.env_id,
            "steps": run.steps,
            "seed": run.seed,
            "config": asdict(run.config),
            "actor_shape": [actor.obs_dim, actor.act_dim, actor.hidden, actor.layers],
            "actor": actor.state_dict(),
            "snapshots": [
                {"step": s.step, "mean_return": s.mean_return, "state_dict": s.state_dict}
                for s in run.snapshots
            ],
            "replay": {k: torch.from_numpy(getattr(run.replay, k)) for k in _REPLAY},
            "train_returns": list(run.train_returns),
            "wall_s": run.wall_s,
            "eval_s": run.eval_s,
        },
        path,
    )
    return path


def load_run(path: str | Path) -> SACRun:
    """Read a run written by :func:`save_run`."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise ValueError(f"{path}: cannot read the cached SAC run: {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("kind") != _KIND:
        raise ValueError(f"{path}: not an onestep-rl SAC run")
    actor = Actor(*ckpt["actor_shape"])
    actor.load_state_dict(ckpt["actor"])
    arrays = {k: np.asarray(v.numpy()) for k, v in ckpt["replay"].items()}
    replay = OfflineDataset(*(arrays[k] for k in _REPLAY), env_id=ckpt["env_id"])
    run = SACRun(
        env_id=ckpt["env_id"],
        steps=ckpt["steps"],
        seed=ckpt["seed"],
        config=SACConfig(**ckpt["config"]),
        actor=actor,
        replay=replay,
        snapshots=[Snapshot(**s) for s in ckpt["snapshots"]],
        train_returns=list(ckpt["train_returns"]),
        wall_s=ckpt["wall_s"],
        eval_s=ckpt["eval_s"],
    )
    return run


def trained_run(
    env_id: str,
    steps: int,
    seed: int = 0,
    config: SACConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[SACRun, Path, bool]:
    """The SAC run for these settings: loaded from the cache, or trained and cached.

    Returns:
        ``(run, path, from_cache)``.
    """
    config = config or SACConfig()
    path = cache_path(cache_dir or default_cache_dir(), env_id, steps, seed, config)
    if path.is_file():
        return load_run(path), path, True
    run = train_sac(env_id, steps, seed=seed, config=config, progress=progress)
    save_run(run, path)
    return run, path, False
