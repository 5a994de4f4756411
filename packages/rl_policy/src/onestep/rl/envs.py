"""Gymnasium environments for collection and evaluation, and D4RL-style normalised scores.

Action convention: every policy in onestep-rl (behaviour policies, OFQL / FQL / DQL agents) acts in
``[-1, 1]^act_dim``. :func:`make_env` therefore wraps any environment whose Box action bounds are
not ``[-1, 1]`` in gymnasium's affine ``RescaleAction`` wrapper (InvertedPendulum-v5's ``[-3, 3]``,
Pendulum-v1's ``[-2, 2]``), so datasets collected and policies evaluated through it all speak the
same unit box; the MuJoCo locomotion tasks (Hopper, HalfCheetah, Walker2d, Ant) are already
``[-1, 1]`` and are left alone.

Normalised score (Fu et al. 2020, D4RL): ``100 * (return - random) / (expert - random)``.
:data:`REFERENCE_SCORES` holds D4RL's reference returns (``d4rl/infos.py``: ``REF_MIN_SCORE`` is a
random policy's return, ``REF_MAX_SCORE`` an expert SAC policy's), measured on the **v2** MuJoCo
tasks of gym 0.x / mujoco-py. We run gymnasium's **v5** tasks: same bodies and reward terms, but
a different simulator build and small fixes, so D4RL-normalised scores on v5 are comparable to
published numbers only approximately. A dataset may carry its own references measured on the
environment it was collected from (Minari's ``ref_min_score`` / ``ref_max_score`` metadata keys;
:mod:`onestep.rl.collect` writes the mean returns of its random and trained behaviour policies
there); :func:`score_reference` says which reference a score used.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = [
    "REFERENCE_SCORES",
    "SUPPORTED_ENVS",
    "Reference",
    "env_dims",
    "make_env",
    "normalized_score",
    "score_reference",
    "task_name",
]

SUPPORTED_ENVS = (
    "Hopper-v5",
    "HalfCheetah-v5",
    "Walker2d-v5",
    "Ant-v5",
    "Reacher-v5",
    "InvertedPendulum-v5",
    "Pendulum-v1",
    "MountainCarContinuous-v0",
)
"""Environments the tests and docs use; any gymnasium id with Box spaces works."""

REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    # task: (random return, expert return), D4RL d4rl/infos.py REF_MIN_SCORE / REF_MAX_SCORE.
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}
"""D4RL reference returns (random, expert) per locomotion task, measured on the v2 tasks."""


@dataclass(frozen=True)
class Reference:
    """The returns a normalised score is measured against.

    Attributes:
        random: the return that scores 0.
        expert: the return that scores 100.
        source: ``"d4rl"`` (D4RL's v2 references) or ``"dataset"`` (the dataset's own
            ``ref_min_score`` / ``ref_max_score``, e.g. onestep's behaviour policies).
    """

    random: float
    expert: float
    source: str

    def normalize(self, ret: float | np.ndarray) -> Any:
        """``100 * (ret - random) / (expert - random)``."""
        return 100.0 * (ret - self.random) / (self.expert - self.random)

    def describe(self) -> str:
        """One line, e.g. ``d4rl reference (random -20.3, expert 3234.3; measured on v2 envs)``."""
        where = "measured on v2 envs" if self.source == "d4rl" else "from the dataset metadata"
        return (
            f"{self.source} reference (random {self.random:.1f}, expert {self.expert:.1f}; {where})"
        )


def task_name(env_id: str) -> str:
    """Lower-case task name of a gymnasium, D4RL or Minari id.

    ``"Hopper-v5"``, ``"hopper-medium-v2"`` and ``"mujoco/hopper/expert-v0"`` all give
    ``"hopper"``.
    """
    parts = env_id.split("/")
    name = parts[1] if len(parts) >= 3 else parts[-1]
    return re.split(r"[-_]", name, maxsplit=1)[0].lower()


def _dataset_reference(metadata: dict[str, Any] | None) -> Reference | None:
    if not metadata:
        return None
    low, high = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    if low is None or high is None or not float(high) > float(low):
        return None
    return Reference(float(low), float(high), "dataset")


def score_reference(
    env_id: str, dataset_metadata: dict[str, Any] | None = None, reference: str = "auto"
) -> Reference | None:
    """The reference returns for ``env_id``, or ``None`` when there are none.

    Args:
        env_id: gymnasium / D4RL / Minari id.
        dataset_metadata: a dataset's metadata; its ``ref_min_score`` / ``ref_max_score`` (the
            returns of the behaviour policies it was collected with) may serve as references.
        reference: ``"d4rl"`` (only D4RL's), ``"dataset"`` (only the dataset's) or ``"auto"``
            (D4RL's when the task has them, so scores compare with published tables; otherwise
            the dataset's).
    """
    if reference not in ("auto", "d4rl", "dataset"):
        raise ValueError(f"reference must be 'auto', 'd4rl' or 'dataset', got {reference!r}")
    d4rl = REFERENCE_SCORES.get(task_name(env_id))
    if reference != "dataset" and d4rl is not None:
        return Reference(*d4rl, source="d4rl")
    if reference != "d4rl":
        return _dataset_reference(dataset_metadata)
    return None


def normalized_score(
    env_id: str,
    ret: float,
    dataset_metadata: dict[str, Any] | None = None,
    reference: str = "auto",
) -> float | None:
    """D4RL normalised score ``100 * (ret - random) / (expert - random)``, or ``None``.

    Which reference is used is decided by :func:`score_reference` (same arguments); call it to
    report the source next to the score.
    """
    ref = score_reference(env_id, dataset_metadata, reference)
    return None if ref is None else float(ref.normalize(ret))


def _needs_rescale(space: spaces.Box) -> bool:
    return not (np.all(space.low == -1.0) and np.all(space.high == 1.0))


def env_dims(env: gym.Env) -> tuple[int, int]:
    """``(obs_dim, act_dim)`` of an environment with flat Box spaces."""
    obs, act = env.observation_space.shape, env.action_space.shape
    if obs is None or act is None or len(obs) != 1 or len(act) != 1:
        raise ValueError(
            f"expected flat Box spaces, got {env.observation_space}, {env.action_space}"
        )
    return int(obs[0]), int(act[0])


def make_env(env_id: str, seed: int | None = None, render: bool = False, **kwargs: Any) -> gym.Env:
    """Make a gymnasium environment whose actions live in ``[-1, 1]``.

    Args:
        env_id: gymnasium id, e.g. ``"Hopper-v5"``, ``"InvertedPendulum-v5"``, ``"Pendulum-v1"``.
        seed: when given, seeds the first ``reset`` and ``action_space.sample``.
        render: create with ``render_mode="rgb_array"`` (frames from ``env.render()``).
        **kwargs: passed to ``gym.make`` (``max_episode_steps``, MuJoCo ``width`` / ``height``).

    Returns:
        The environment, wrapped in ``RescaleAction(-1, 1)`` when its Box bounds differ from
        ``[-1, 1]`` (the original space is ``env.unwrapped.action_space``).

    Raises:
        ValueError: unknown id, or a non-Box observation / action space.
    """
    try:
        env = gym.make(env_id, render_mode="rgb_array" if render else None, **kwargs)
    except gym.error.Error as err:
        raise ValueError(
            f"cannot make environment {env_id!r}: {err}. Tested ids: {', '.join(SUPPORTED_ENVS)}"
        ) from err
    act, obs = env.action_space, env.observation_space
    if not isinstance(act, spaces.Box) or not isinstance(obs, spaces.Box) or len(obs.shape) != 1:
        env.close()
        raise ValueError(
            f"{env_id}: onestep-rl needs a flat Box observation space and a Box action space, got "
            f"observation_space {obs} and action_space {act}"
        )
    if _needs_rescale(act):
        if not (np.isfinite(act.low).all() and np.isfinite(act.high).all()):
            env.close()
            raise ValueError(f"{env_id}: cannot rescale unbounded action space {act} to [-1, 1]")
        with warnings.catch_warnings():
            # float64 scalars keep the wrapper's spec JSON-serialisable (Minari stores it;
            # np.float64 is a Python float); the cast to float32 gymnasium warns about is exact.
            warnings.simplefilter("ignore", UserWarning)
            one = np.float64(1.0)
            env = gym.wrappers.RescaleAction(env, min_action=-one, max_action=one)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env
