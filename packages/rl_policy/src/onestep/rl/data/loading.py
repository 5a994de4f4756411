"""One entry point for every dataset format: :func:`load_dataset`."""

from __future__ import annotations

from pathlib import Path

from onestep.rl.data.d4rl import load_d4rl
from onestep.rl.data.dataset import OfflineDataset
from onestep.rl.data.minari import load_minari

__all__ = ["HDF5_SUFFIXES", "load_dataset"]

HDF5_SUFFIXES = (".hdf5", ".h5")


def load_dataset(path: str | Path, env_id: str | None = None) -> OfflineDataset:
    """Load an offline dataset: a Minari folder or a D4RL-style ``.hdf5`` / ``.h5`` file.

    Args:
        path: a folder (Minari layout: ``data/main_data.hdf5`` + ``data/metadata.json``) or a
            flat HDF5 file.
        env_id: the gymnasium id to record when the file does not name one (D4RL files don't);
            when the file names another id, a ``ValueError`` says so.

    Raises:
        ValueError: missing path, unknown format, unreadable or inconsistent data; the message
            names the path.
    """
    path = Path(path)
    if path.is_dir():
        dataset = load_minari(path)
    elif path.is_file() and path.suffix.lower() in HDF5_SUFFIXES:
        dataset = load_d4rl(path)
    elif path.exists():
        raise ValueError(
            f"{path}: unknown dataset format; expected a Minari folder or a "
            f"{'/'.join(HDF5_SUFFIXES)} file"
        )
    else:
        raise ValueError(f"{path}: no such dataset file or folder")
    if env_id is not None:
        if dataset.env_id not in (None, env_id):
            raise ValueError(
                f"{path}: the dataset was collected on {dataset.env_id!r}, not {env_id!r}"
            )
        dataset.env_id = env_id
    return dataset
