"""Checks that a dataset fits an environment, and mapping its actions onto ``[-1, 1]``.

Agents act in ``[-1, 1]`` (:mod:`onestep.rl.envs`). Data collected through
:func:`~onestep.rl.envs.make_env` already is; data recorded in an environment's native bounds
(e.g. a Minari Pendulum dataset in ``[-2, 2]``) is mapped by the same affine map as gymnasium's
``RescaleAction``: ``a_unit = 2 * (a - low) / (high - low) - 1``. Actions outside the bounds are an
error, never clipped silently (beyond float round-off).
"""

from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
import numpy as np

from onestep.rl.data.dataset import OfflineDataset
from onestep.rl.data.spaces import box_bounds

__all__ = ["ACTION_TOLERANCE", "action_bounds", "check_dataset_matches_env", "to_unit_actions"]

ACTION_TOLERANCE = 1e-4
"""Round-off allowed beyond the action bounds (float32 storage, rescaling)."""


def _describe_dataset(dataset: OfflineDataset) -> str:
    where = dataset.source or "(in memory)"
    lo, hi = (
        (float(dataset.actions.min()), float(dataset.actions.max())) if len(dataset) else (0, 0)
    )
    return (
        f"dataset {where} (env_id {dataset.env_id!r}, observations [{len(dataset)}, "
        f"{dataset.obs_dim}], actions [{len(dataset)}, {dataset.act_dim}] in [{lo:.3g}, {hi:.3g}])"
    )


def _describe_env(env: gym.Env) -> str:
    env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    return (
        f"environment {env_id} (observation_space {env.observation_space}, "
        f"action_space {env.action_space})"
    )


def check_dataset_matches_env(dataset: OfflineDataset, env: gym.Env) -> None:
    """Raise when ``dataset`` cannot have come from ``env`` (shapes or action bounds).

    For an environment acting in ``[-1, 1]`` (every :func:`~onestep.rl.envs.make_env` env) the
    dataset's actions are first mapped to ``[-1, 1]`` as the data module does
    (:func:`to_unit_actions`), so data recorded in the native bounds still matches.

    Raises:
        ValueError: naming the dataset (path, env_id, shapes, action range) and the environment
            (id, spaces) and saying what differs.
    """
    obs_space, act_space = env.observation_space, env.action_space
    problems = []
    if obs_space.shape != (dataset.obs_dim,):
        problems.append(f"observation shape {(dataset.obs_dim,)} != {obs_space.shape}")
    if act_space.shape != (dataset.act_dim,):
        problems.append(f"action shape {(dataset.act_dim,)} != {act_space.shape}")
    elif isinstance(act_space, gym.spaces.Box) and len(dataset):
        problems += _action_problems(dataset, act_space)
    if problems:
        raise ValueError(
            f"{_describe_dataset(dataset)} does not match {_describe_env(env)}: "
            + "; ".join(problems)
        )


def _action_problems(dataset: OfflineDataset, space: gym.spaces.Box) -> list[str]:
    actions = dataset.actions
    if np.all(space.low == -1.0) and np.all(space.high == 1.0):
        try:
            actions = to_unit_actions(dataset).actions
        except ValueError as err:
            return [str(err)]
    low = space.low.astype(np.float64) - ACTION_TOLERANCE
    high = space.high.astype(np.float64) + ACTION_TOLERANCE
    outside = (actions < low) | (actions > high)
    if not outside.any():
        return []
    row, col = np.argwhere(outside)[0]
    return [
        f"{int(outside.any(axis=1).sum())} actions lie outside the action bounds, e.g. "
        f"row {row} dim {col} = {actions[row, col]:.4g}"
    ]


def _registered_bounds(env_id: str, act_dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Native action bounds of a registered gymnasium env (without onestep's rescaling)."""
    try:
        env = gym.make(env_id)
    except gym.error.Error:
        return None
    try:
        space = env.action_space
        if not isinstance(space, gym.spaces.Box) or space.shape != (act_dim,):
            return None
        return space.low.astype(np.float64), space.high.astype(np.float64)
    finally:
        env.close()


def action_bounds(dataset: OfflineDataset) -> tuple[np.ndarray, np.ndarray, str] | None:
    """``(low, high, source)`` of the dataset's action space, or ``None`` when unknown.

    The space recorded in the metadata (``action_space``, Minari's Box dict) wins; otherwise the
    native bounds of the registered environment ``dataset.env_id``.
    """
    desc = dataset.metadata.get("action_space")
    if isinstance(desc, dict):
        low, high = box_bounds(desc, dataset.act_dim)
        if np.isfinite(low).all() and np.isfinite(high).all():
            return low, high, "the dataset's action_space metadata"
    if dataset.env_id:
        bounds = _registered_bounds(dataset.env_id, dataset.act_dim)
        if bounds is not None:
            return *bounds, f"the action space of {dataset.env_id}"
    return None


def to_unit_actions(dataset: OfflineDataset) -> OfflineDataset:
    """The dataset with actions in ``[-1, 1]``, rescaled from its action bounds when needed.

    With unknown bounds the actions must already lie in ``[-1, 1]``. A rescaled dataset records
    the original bounds in ``metadata["action_rescaled_from"]``.

    Raises:
        ValueError: actions outside their bounds (or outside ``[-1, 1]`` when bounds are
            unknown), naming the dataset, the bounds and their source.
    """
    bounds = action_bounds(dataset)
    low, high, source = bounds or (
        -np.ones(dataset.act_dim),
        np.ones(dataset.act_dim),
        "the default [-1, 1] (no action_space metadata and no known env_id)",
    )
    actions = dataset.actions.astype(np.float64)
    outside = (actions < low - ACTION_TOLERANCE) | (actions > high + ACTION_TOLERANCE)
    if outside.any():
        row, col = np.argwhere(outside)[0]
        raise ValueError(
            f"{_describe_dataset(dataset)}: {int(outside.any(axis=1).sum())} actions exceed the "
            f"bounds [{low.tolist()}, {high.tolist()}] from {source}, e.g. row {row} dim {col} = "
            f"{actions[row, col]:.4g}"
        )
    if np.all(low == -1.0) and np.all(high == 1.0):
        if np.abs(dataset.actions).max(initial=0.0) <= 1.0:
            return dataset
        # Only float round-off is left beyond +-1 (checked above).
        return replace(dataset, actions=np.clip(dataset.actions, -1.0, 1.0))
    unit = 2.0 * (actions - low) / (high - low) - 1.0
    meta = dict(dataset.metadata)
    meta["action_rescaled_from"] = {"low": low.tolist(), "high": high.tolist()}
    meta["action_space"] = {
        "type": "Box",
        "dtype": "float32",
        "shape": [dataset.act_dim],
        "low": [-1.0] * dataset.act_dim,
        "high": [1.0] * dataset.act_dim,
    }
    return replace(dataset, actions=np.clip(unit, -1.0, 1.0).astype(np.float32), metadata=meta)
