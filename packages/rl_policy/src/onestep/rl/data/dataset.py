"""The in-memory offline RL dataset: flat transitions as numpy arrays.

Every reader (:mod:`~onestep.rl.data.minari`, :mod:`~onestep.rl.data.d4rl`) returns an
:class:`OfflineDataset` and every writer takes one, so agents, the data module and the collectors
see one shape of data whatever the file format. Rows are transitions ``(s, a, r, s', terminal,
timeout)`` in collection order, so episodes are contiguous runs of rows.

``terminals`` marks a true end of the MDP (the bootstrap target is ``r``); ``timeouts`` marks an
episode cut by a time limit or by the end of collection (the next state is still a normal state, so
Q-learning must bootstrap through it). This is D4RL's convention (Fu et al. 2020) and Minari's
``terminations`` / ``truncations``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["OfflineDataset", "episode_ends"]

_FLOAT_2D = ("observations", "actions", "next_observations")
_FLOAT_1D = ("rewards",)
_BOOL_1D = ("terminals", "timeouts")


def episode_ends(
    observations: np.ndarray,
    next_observations: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray,
    atol: float = 1e-6,
) -> np.ndarray:
    """Rows that end an episode: terminal, timeout, last row, or a break in the state chain.

    The chain test (``next_observations[i] != observations[i + 1]``) is IQL's way of finding
    episode ends in D4RL data whose time-limit flags are missing (Kostrikov et al. 2022,
    ``dataset_utils.py``), so an unflagged boundary still splits episodes.

    Returns:
        ``[N]`` bool.
    """
    ends = terminals | timeouts
    if len(ends) == 0:
        return ends.copy()
    gap = np.abs(next_observations[:-1] - observations[1:]).max(axis=1) > atol  # (N - 1,)
    ends = ends.copy()
    ends[:-1] |= gap
    ends[-1] = True
    return ends


@dataclass
class OfflineDataset:
    """Flat transitions of an offline RL dataset.

    Args:
        observations: ``[N, obs_dim]`` float32.
        actions: ``[N, act_dim]`` float32.
        rewards: ``[N]`` float32.
        terminals: ``[N]`` bool, true MDP terminations (no bootstrap).
        timeouts: ``[N]`` bool, episodes cut by a time limit or by the end of collection.
        next_observations: ``[N, obs_dim]`` float32.
        env_id: the gymnasium id the data came from (``"Hopper-v5"``), when known.
        metadata: JSON-serialisable facts about the data: behaviour policy, reference returns
            (``ref_min_score`` / ``ref_max_score``, Minari's keys), seed, spaces.
        source: where it was loaded from (a path), for error messages; not saved.

    Raises:
        ValueError: a wrong dtype, shape, row count or a non-finite value, naming the array.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    next_observations: np.ndarray
    env_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self):
        n = len(self.rewards) if np.ndim(self.rewards) == 1 else -1
        for name in (*_FLOAT_2D, *_FLOAT_1D, *_BOOL_1D):
            self._check(name, n)
        if self.observations.shape[1] != self.next_observations.shape[1]:
            raise ValueError(
                f"{self._where()}observations have {self.observations.shape[1]} features but "
                f"next_observations have {self.next_observations.shape[1]}"
            )

    def _where(self) -> str:
        return f"{self.source}: " if self.source else ""

    def _check(self, name: str, n: int) -> None:
        value = getattr(self, name)
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{self._where()}{name} must be a numpy array, got {type(value)}")
        ndim, dtype = (2, np.float32) if name in _FLOAT_2D else (1, None)
        dtype = np.bool_ if name in _BOOL_1D else (dtype or np.float32)
        if value.ndim != ndim:
            raise ValueError(
                f"{self._where()}{name} must have {ndim} dimension(s), got shape {value.shape}"
            )
        if n < 0 or len(value) != n:
            raise ValueError(
                f"{self._where()}{name} has {len(value)} rows but rewards has "
                f"{'a bad shape' if n < 0 else n}; every array needs one row per transition"
            )
        if value.dtype != dtype:
            raise ValueError(
                f"{self._where()}{name} must be {np.dtype(dtype).name}, got {value.dtype}; "
                "convert it with OfflineDataset.from_arrays"
            )
        if dtype == np.float32 and not np.isfinite(value).all():
            bad = int(np.flatnonzero(~np.isfinite(value).reshape(len(value), -1).all(1))[0])
            raise ValueError(f"{self._where()}{name} has NaN or inf values (first at row {bad})")

    @classmethod
    def from_arrays(
        cls,
        observations: Any,
        actions: Any,
        rewards: Any,
        terminals: Any,
        timeouts: Any,
        next_observations: Any,
        env_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> OfflineDataset:
        """Build from array-likes of any float / int dtype, casting to float32 and bool.

        Rewards and flags given as ``[N, 1]`` are flattened to ``[N]``; anything else keeps its
        shape and is validated by ``__post_init__``.
        """

        def flat(x: Any, dtype: type) -> np.ndarray:
            x = np.asarray(x)
            if x.ndim == 2 and x.shape[1] == 1:
                x = x[:, 0]
            return x.astype(dtype)

        return cls(
            observations=np.asarray(observations).astype(np.float32),
            actions=np.asarray(actions).astype(np.float32),
            rewards=flat(rewards, np.float32),
            terminals=flat(terminals, np.bool_),
            timeouts=flat(timeouts, np.bool_),
            next_observations=np.asarray(next_observations).astype(np.float32),
            env_id=env_id,
            metadata=dict(metadata or {}),
            source=source,
        )

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def obs_dim(self) -> int:
        """Observation features."""
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        """Action dimensions."""
        return int(self.actions.shape[1])

    def episode_ends(self) -> np.ndarray:
        """``[N]`` bool: rows that end an episode (see :func:`episode_ends`)."""
        return episode_ends(
            self.observations, self.next_observations, self.terminals, self.timeouts
        )

    def episode_slices(self) -> list[slice]:
        """One ``slice`` of rows per episode, in order."""
        stops = np.flatnonzero(self.episode_ends()) + 1
        starts = np.concatenate([[0], stops[:-1]])
        return [slice(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode, ``[num_episodes]`` float64.

        Episodes end at terminals, timeouts, breaks in the state chain and the last row, so a
        partial last episode counts as one.
        """
        ends = self.episode_ends()
        if len(ends) == 0:
            return np.zeros(0)
        ids = np.concatenate([[0], np.cumsum(ends)[:-1]])  # episode index of each row
        return np.bincount(ids, weights=self.rewards.astype(np.float64))

    def select(self, rows: np.ndarray | slice) -> OfflineDataset:
        """A new dataset holding copies of ``rows`` (same env_id, metadata copied)."""
        return OfflineDataset(
            observations=self.observations[rows].copy(),
            actions=self.actions[rows].copy(),
            rewards=self.rewards[rows].copy(),
            terminals=self.terminals[rows].copy(),
            timeouts=self.timeouts[rows].copy(),
            next_observations=self.next_observations[rows].copy(),
            env_id=self.env_id,
            metadata=dict(self.metadata),
            source=self.source,
        )

    @staticmethod
    def concatenate(
        parts: list[OfflineDataset], metadata: dict[str, Any] | None = None
    ) -> OfflineDataset:
        """Rows of ``parts`` one after another (D4RL's medium-expert is built this way).

        The last row of each part is marked as a timeout unless it is terminal, so episodes
        never run across parts.
        """
        if not parts:
            raise ValueError("concatenate needs at least one dataset")
        timeouts = []
        for part in parts:
            t = part.timeouts.copy()
            if len(t) and not part.terminals[-1]:
                t[-1] = True
            timeouts.append(t)
        return OfflineDataset(
            observations=np.concatenate([p.observations for p in parts]),
            actions=np.concatenate([p.actions for p in parts]),
            rewards=np.concatenate([p.rewards for p in parts]),
            terminals=np.concatenate([p.terminals for p in parts]),
            timeouts=np.concatenate(timeouts),
            next_observations=np.concatenate([p.next_observations for p in parts]),
            env_id=parts[0].env_id,
            metadata=dict(metadata if metadata is not None else parts[0].metadata),
        )
