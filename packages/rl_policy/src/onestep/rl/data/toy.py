"""Small hand-made datasets with known episode structure, for tests and examples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from onestep.rl.data.dataset import OfflineDataset

__all__ = ["toy_dataset"]


def toy_dataset(
    lengths: Sequence[int] = (4, 3, 5),
    ends: Sequence[str] = ("terminal", "timeout", "none"),
    obs_dim: int = 3,
    act_dim: int = 2,
    seed: int = 0,
    env_id: str | None = "Hopper-v5",
    metadata: dict[str, Any] | None = None,
) -> OfflineDataset:
    """Random episodes whose states chain (``next_observations[i] == observations[i + 1]``).

    Args:
        lengths: steps per episode.
        ends: how each episode ends: ``"terminal"``, ``"timeout"`` or ``"none"`` (no flag, as
            the last, cut-off episode of a collection).
        obs_dim: observation features (standard normal).
        act_dim: action dimensions (uniform in ``[-1, 1]``).
        seed: numpy seed.
        env_id: recorded environment id.
        metadata: recorded metadata (default ``{"behavior": "toy"}``).
    """
    if len(lengths) != len(ends):
        raise ValueError(f"one end per episode: {len(lengths)} lengths, {len(ends)} ends")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("o", "a", "r", "d", "t", "n")}
    for length, end in zip(lengths, ends, strict=True):
        states = rng.normal(size=(length + 1, obs_dim)).astype(np.float32)
        flags = np.zeros((2, length), bool)
        flags[0, -1], flags[1, -1] = end == "terminal", end == "timeout"
        parts["o"].append(states[:-1])
        parts["n"].append(states[1:])
        parts["a"].append(rng.uniform(-1, 1, (length, act_dim)).astype(np.float32))
        parts["r"].append(rng.normal(size=length).astype(np.float32))
        parts["d"].append(flags[0])
        parts["t"].append(flags[1])
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return OfflineDataset(
        cat["o"],
        cat["a"],
        cat["r"],
        cat["d"],
        cat["t"],
        cat["n"],
        env_id=env_id,
        metadata=dict(metadata if metadata is not None else {"behavior": "toy"}),
    )
