"""Minari's on-disk layout, read and written with h5py (no ``minari`` import).

A Minari dataset is a folder (``~/.minari/datasets/<dataset_id>/`` when installed through Minari)::

    <folder>/data/metadata.json      dataset_id, minari_version, data_format "hdf5", env_spec,
                                     observation_space / action_space (JSON strings), totals,
                                     ref_min_score / ref_max_score, and any other keys
    <folder>/data/main_data.hdf5     one group per episode: episode_0, episode_1, ...
        episode_k/observations       [T + 1, obs_dim]  (the first and the final observation)
        episode_k/actions            [T, act_dim]
        episode_k/rewards            [T]
        episode_k/terminations       [T] bool
        episode_k/truncations        [T] bool
        episode_k.attrs              id, total_steps (and seed when known)

This follows Minari's ``HDF5Storage`` (``minari/dataset/_storages/hdf5_storage.py``) and
``MinariStorage.new`` (``metadata.json``). Checked with Minari 0.5.4:
``minari.MinariDataset("<folder>/data")`` opens what :func:`save_minari` writes (episodes,
spaces, ``recover_environment()`` with the ``RescaleAction`` wrapper, and
``minari.get_normalized_score`` from our references). Minari itself is not a dependency (its
datasets need downloads; writing with it needs jax). Only flat Box observations and actions are
supported; ``infos`` groups are ignored.

Flat transitions <-> episodes: an episode's observations are its rows' observations plus the
last row's next observation, so ``next_observations[i]`` is stored as ``observations[i + 1]`` of
the same episode (exact when the data is a consistent chain, which :func:`episode_ends` ensures
by cutting episodes wherever it is not).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from onestep.rl.data.dataset import OfflineDataset
from onestep.rl.data.spaces import unbounded_box

__all__ = ["MINARI_VERSION", "load_minari", "minari_data_dir", "save_minari"]

MINARI_VERSION = "0.5.0"
"""Written as ``minari_version``. Minari 0.5 readers accept a dataset only when this exact string is
in their ``supported_dataset_versions`` (0.5.4 accepts 0.4.0 to 0.5.4), so the oldest 0.5 format
this layout matches is named."""

_MAIN, _META = "main_data.hdf5", "metadata.json"
# metadata.json keys computed on write (not copied into OfflineDataset.metadata on read).
_COMPUTED = ("minari_version", "data_format", "total_episodes", "total_steps", "dataset_size")
_SPACES = ("observation_space", "action_space")
_EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


def minari_data_dir(path: str | Path) -> Path:
    """The folder holding ``main_data.hdf5``: ``path/data`` or ``path`` itself."""
    path = Path(path)
    return path / "data" if (path / "data").is_dir() else path


def _default_dataset_id(dataset: OfflineDataset) -> str:
    env = (dataset.env_id or "offline").split("-v")[0].split("/")[-1].lower()
    behavior = str(dataset.metadata.get("behavior", "data")).replace("_", "-")
    return f"{env}-{behavior}-v0"


def _metadata_json(dataset: OfflineDataset, episodes: int, size_mb: float) -> dict[str, Any]:
    meta = dict(dataset.metadata)
    for key in _COMPUTED:
        meta.pop(key, None)
    out: dict[str, Any] = {
        "dataset_id": meta.pop("dataset_id", None) or _default_dataset_id(dataset),
        "minari_version": MINARI_VERSION,
        "data_format": "hdf5",
        "total_episodes": episodes,
        "total_steps": len(dataset),
        "dataset_size": size_mb,
        "env_id": dataset.env_id,
    }
    obs = meta.pop("observation_space", None) or unbounded_box(dataset.obs_dim)
    act = meta.pop("action_space", None) or unbounded_box(dataset.act_dim)
    out["observation_space"], out["action_space"] = json.dumps(obs), json.dumps(act)
    out.update(meta)
    return out


def _write_episode(group: h5py.Group, index: int, dataset: OfflineDataset, rows: slice) -> None:
    observations = np.concatenate(
        [dataset.observations[rows], dataset.next_observations[rows][-1:]]
    )  # (T + 1, obs_dim)
    group.attrs["id"] = index
    group.attrs["total_steps"] = rows.stop - rows.start
    group.create_dataset("observations", data=observations)
    group.create_dataset("actions", data=dataset.actions[rows])
    group.create_dataset("rewards", data=dataset.rewards[rows])
    group.create_dataset("terminations", data=dataset.terminals[rows])
    group.create_dataset("truncations", data=dataset.timeouts[rows])


def save_minari(dataset: OfflineDataset, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``dataset`` as a Minari folder at ``path`` (creates ``path/data/``).

    Spaces come from ``dataset.metadata["observation_space"]`` / ``["action_space"]`` (Minari
    Box dicts, see :mod:`onestep.rl.data.spaces`), unbounded Boxes when absent; every other
    metadata key is written into ``metadata.json`` as is (it must be JSON-serialisable).

    Args:
        dataset: the transitions.
        path: the dataset folder.
        overwrite: replace an existing dataset there instead of raising.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    data_dir = path / "data"
    if data_dir.exists():
        if not overwrite:
            raise ValueError(f"{path} already holds a dataset; pass overwrite=True to replace it")
        shutil.rmtree(data_dir)
    if len(dataset) == 0:
        raise ValueError(f"refusing to write an empty dataset to {path}")
    data_dir.mkdir(parents=True)
    episodes = dataset.episode_slices()
    with h5py.File(data_dir / _MAIN, "w", track_order=True) as file:
        for k, rows in enumerate(episodes):
            _write_episode(file.create_group(f"episode_{k}"), k, dataset, rows)
    size_mb = round((data_dir / _MAIN).stat().st_size / 1e6, 1)
    meta = _metadata_json(dataset, len(episodes), size_mb)
    try:
        text = json.dumps(meta, indent=1)
    except TypeError as err:
        raise ValueError(f"dataset metadata is not JSON-serialisable: {err}") from err
    (data_dir / _META).write_text(text)
    return path


def _read_metadata(data_dir: Path) -> dict[str, Any]:
    try:
        meta = json.loads((data_dir / _META).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{data_dir / _META}: cannot read Minari metadata: {err}") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{data_dir / _META}: expected a JSON object, got {type(meta).__name__}")
    return meta


def _read_episode(group: Any, name: str, where: Path) -> dict[str, np.ndarray]:
    if not isinstance(group, h5py.Group):
        raise ValueError(f"{where}: {name} is not an HDF5 group")
    missing = [k for k in _EPISODE_KEYS if k not in group]
    if missing:
        raise ValueError(f"{where}: {name} lacks {missing} (has {sorted(group.keys())})")
    if isinstance(group["observations"], h5py.Group):
        raise ValueError(
            f"{where}: {name}/observations is a group (a Dict or Tuple observation space); "
            "onestep-rl reads flat Box observations only"
        )
    ep = {}
    for key in _EPISODE_KEYS:
        node = group[key]
        if not isinstance(node, h5py.Dataset):
            raise ValueError(
                f"{where}: {name}/{key} is an HDF5 {type(node).__name__}, not a dataset"
            )
        ep[key] = np.asarray(node[()])
    steps = len(ep["actions"])
    if len(ep["observations"]) != steps + 1 or any(
        len(ep[k]) != steps for k in ("rewards", "terminations", "truncations")
    ):
        shapes = {k: ep[k].shape for k in _EPISODE_KEYS}
        raise ValueError(
            f"{where}: {name} needs T + 1 observations and T actions, rewards, terminations, "
            f"truncations; got {shapes}"
        )
    return ep


def _episode_names(file: h5py.File, where: Path) -> list[str]:
    names = [k for k in file.keys() if k.startswith("episode_")]
    if not names:
        raise ValueError(f"{where}: no episode_<k> groups (keys: {sorted(file.keys())[:10]})")
    return sorted(names, key=lambda k: int(k.split("_")[1]) if k.split("_")[1].isdigit() else -1)


def _read_episodes(main: Path) -> list[dict[str, np.ndarray]]:
    try:
        with h5py.File(main, "r") as file:
            return [_read_episode(file[name], name, main) for name in _episode_names(file, main)]
    except (OSError, KeyError, TypeError, RuntimeError) as err:
        raise ValueError(
            f"{main}: cannot read the HDF5 file (truncated or corrupt?): {err}"
        ) from err


def load_minari(path: str | Path) -> OfflineDataset:
    """Read a Minari folder (the dataset folder or its ``data/`` subfolder) into transitions.

    Returns:
        The dataset; ``metadata`` holds every ``metadata.json`` key except the computed ones
        (totals, format, version), with the spaces parsed into dicts; ``env_id`` comes from
        ``env_id`` or else the ``env_spec`` id.

    Raises:
        ValueError: a missing file, unreadable HDF5 / JSON, a missing key, inconsistent shapes,
            non-Box observations; the message names the file.
    """
    data_dir = minari_data_dir(path)
    main = data_dir / _MAIN
    if not main.is_file() or not (data_dir / _META).is_file():
        raise ValueError(
            f"{path}: not a Minari dataset folder (expected data/{_MAIN} and data/{_META})"
        )
    meta = _read_metadata(data_dir)
    episodes = _read_episodes(main)
    obs = [ep["observations"] for ep in episodes]
    if len({o.shape[1:] for o in obs}) != 1 or obs[0].ndim != 2:
        raise ValueError(f"{main}: episodes have different or non-flat observation shapes")
    try:
        dataset = OfflineDataset.from_arrays(
            observations=np.concatenate([o[:-1] for o in obs]),
            actions=np.concatenate([ep["actions"] for ep in episodes]),
            rewards=np.concatenate([ep["rewards"] for ep in episodes]),
            terminals=np.concatenate([ep["terminations"] for ep in episodes]),
            timeouts=np.concatenate([ep["truncations"] for ep in episodes]),
            next_observations=np.concatenate([o[1:] for o in obs]),
            env_id=_env_id(meta),
            metadata=_dataset_metadata(meta),
            source=str(path),
        )
    except ValueError as err:
        raise ValueError(f"{main}: {err}") from err
    return dataset


def _env_id(meta: dict[str, Any]) -> str | None:
    if meta.get("env_id"):
        return str(meta["env_id"])
    spec = meta.get("env_spec")
    if isinstance(spec, str):
        try:
            return json.loads(spec).get("id")
        except json.JSONDecodeError:
            return None
    return None


def _dataset_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in meta.items() if k not in (*_COMPUTED, "env_id")}
    for key in _SPACES:
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out
