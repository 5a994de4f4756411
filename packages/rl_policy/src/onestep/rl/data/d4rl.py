"""D4RL-style flat HDF5 files (``hopper-medium-v2.hdf5``), read and written with h5py.

One file, one array per field, one row per step (Fu et al. 2020): ``observations``, ``actions``,
``rewards``, ``terminals``, ``timeouts`` and, in some files, ``next_observations``; other keys
(``infos/*``, ``metadata/*``) are ignored. Files written here also carry ``env_id`` and the
JSON-encoded metadata as file attributes.

Without ``next_observations`` the next state is taken from the next row, as D4RL's
``qlearning_dataset`` does: a row flagged ``timeouts`` has no stored successor (the next row starts
a new episode), so it is dropped together with the file's last row. The row before a dropped one
then ends its episode, and is marked as a timeout here so episodes stay separable (D4RL itself
keeps no flag there; IQL recovers the boundary from the break in the state chain).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from onestep.rl.data.dataset import OfflineDataset

__all__ = ["D4RL_KEYS", "derive_next_observations", "load_d4rl", "save_d4rl"]

D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")
_REQUIRED = ("observations", "actions", "rewards", "terminals")
_META_ATTR = "onestep_metadata"


def save_d4rl(dataset: OfflineDataset, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``dataset`` as one flat HDF5 file (all six D4RL keys, metadata as attributes)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; pass overwrite=True to replace it")
    try:
        meta = json.dumps(dataset.metadata)
    except TypeError as err:
        raise ValueError(f"dataset metadata is not JSON-serialisable: {err}") from err
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        for key in D4RL_KEYS:
            file.create_dataset(key, data=getattr(dataset, key))
        file.attrs["env_id"] = dataset.env_id or ""
        file.attrs[_META_ATTR] = meta
    return path


def derive_next_observations(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """D4RL's ``qlearning_dataset(terminate_on_end=False)`` on flat arrays, vectorised.

    Args:
        arrays: ``observations``, ``actions``, ``rewards``, ``terminals``, ``timeouts``; each
            ``[N, ...]``.

    Returns:
        The same keys plus ``next_observations`` for the kept rows ``i < N - 1`` that are not
        timeouts; a kept row whose successor row was dropped is marked as a timeout.
    """
    n = len(arrays["rewards"])
    timeouts = arrays["timeouts"].astype(bool)
    terminals = arrays["terminals"].astype(bool)
    keep = np.zeros(n, dtype=bool)
    keep[:-1] = ~timeouts[:-1]  # (N,); the last row has no successor
    # A kept row ends its (truncated) episode when its successor row is dropped.
    dropped_next = np.zeros(n, dtype=bool)
    dropped_next[:-1] = ~keep[1:]
    new_timeouts = keep & dropped_next & ~terminals
    out = {k: arrays[k][keep] for k in ("observations", "actions", "rewards")}
    out["next_observations"] = arrays["observations"][1:][keep[:-1]]
    out["terminals"] = terminals[keep]
    out["timeouts"] = new_timeouts[keep]
    return out


def _read_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        with h5py.File(path, "r") as file:
            missing = [k for k in _REQUIRED if k not in file]
            if missing:
                raise ValueError(
                    f"{path}: missing {missing}; a D4RL-style file needs {list(_REQUIRED)} plus "
                    f"timeouts or next_observations (found keys {sorted(file.keys())})"
                )
            arrays = {k: _read(file, k, path) for k in D4RL_KEYS if k in file}
            attrs = {k: file.attrs[k] for k in ("env_id", _META_ATTR) if k in file.attrs}
    except (OSError, KeyError, TypeError, RuntimeError) as err:
        raise ValueError(
            f"{path}: cannot read the HDF5 file (truncated or corrupt?): {err}"
        ) from err
    return arrays, attrs


def _read(file: h5py.File, key: str, path: Path) -> np.ndarray:
    node = file[key]
    if not isinstance(node, h5py.Dataset):
        raise ValueError(f"{path}: {key} is an HDF5 {type(node).__name__}, not an array")
    return np.asarray(node[()])


def _attr_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def load_d4rl(path: str | Path) -> OfflineDataset:
    """Read a D4RL-style HDF5 file.

    Returns:
        The dataset. ``metadata["next_observations_derived"]`` is True when the file had no
        ``next_observations`` and they were derived as in :func:`derive_next_observations`.

    Raises:
        ValueError: unreadable file, missing keys, inconsistent shapes or dtypes, naming ``path``.
    """
    path = Path(path)
    arrays, attrs = _read_arrays(path)
    has_next = "next_observations" in arrays
    if not has_next and "timeouts" not in arrays:
        raise ValueError(
            f"{path}: has neither timeouts nor next_observations, so time-limit episode ends "
            "cannot be told from state breaks; add a timeouts array"
        )
    n = len(arrays["rewards"])
    for key in ("terminals", "timeouts"):
        arrays.setdefault(key, np.zeros(n, dtype=bool))
    bad = {k: v.shape for k, v in arrays.items() if v.ndim == 0 or len(v) != n}
    if bad:
        raise ValueError(f"{path}: arrays must all have {n} rows (rewards); got shapes {bad}")
    if not has_next:
        arrays = derive_next_observations(arrays)
    try:
        meta = json.loads(_attr_str(attrs[_META_ATTR])) if _META_ATTR in attrs else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: the {_META_ATTR} attribute is not valid JSON: {err}") from err
    if not has_next:
        meta["next_observations_derived"] = True
    try:
        return OfflineDataset.from_arrays(
            **{k: arrays[k] for k in D4RL_KEYS},
            env_id=_attr_str(attrs.get("env_id", "")) or None,
            metadata=meta,
            source=str(path),
        )
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
