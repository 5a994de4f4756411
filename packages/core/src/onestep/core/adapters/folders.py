"""Local diffusers folder layouts: pipeline folders, model folders and their schedulers.

Only local paths are read; a missing path raises with its name (hub ids are never fetched).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

__all__ = [
    "MODEL_CONFIG",
    "MODEL_INDEX",
    "check_exists",
    "find_scheduler",
    "model_folder",
    "read_json",
]

MODEL_INDEX = "model_index.json"
MODEL_CONFIG = "config.json"


def read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON config file."""
    return json.loads(path.read_text())


def check_exists(path: str | Path) -> Path:
    """``path`` as a ``Path``, or a ``FileNotFoundError`` that names it."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(
            f"{str(path)!r} does not exist; onestep loads diffusers models from local folders only "
            "(download a hub model with `hf download <id> --local-dir <folder>` first)"
        )
    return folder


def model_folder(
    path: str | Path, subfolder: str | None, known: Collection[str]
) -> tuple[Path, Path | None]:
    """Find the model folder and its pipeline folder (if any) for a local path.

    Args:
        path: a pipeline folder (with ``model_index.json``) or a model folder (with
            ``config.json``).
        subfolder: the model's folder inside ``path``; when ``None``, the first component of
            ``model_index.json`` whose class name is in ``known``.
        known: model class names that can be picked from a pipeline.

    Returns:
        ``(model_folder, pipeline_folder_or_None)``.

    Raises:
        FileNotFoundError: if ``path`` does not exist or holds no model config.
        ValueError: if a pipeline folder holds no known model.
    """
    root = check_exists(path)
    if subfolder is not None:
        model = check_exists(root / subfolder)
    elif (root / MODEL_INDEX).is_file():
        index = read_json(root / MODEL_INDEX)
        names = [k for k, v in index.items() if isinstance(v, list) and v[-1] in known]
        if not names:
            raise ValueError(
                f"{root / MODEL_INDEX} lists no model onestep can wrap "
                f"(supported: {sorted(known)}); pass subfolder=..."
            )
        model = root / names[0]
    else:
        model = root
    if not (model / MODEL_CONFIG).is_file():
        raise FileNotFoundError(
            f"no {MODEL_CONFIG} in {model}; pass a diffusers pipeline or model folder "
            "(or subfolder='unet' / 'transformer')"
        )
    parent = model.parent
    pipeline = parent if (parent / MODEL_INDEX).is_file() and parent != model else None
    return model, pipeline


def find_scheduler(model: Path, pipeline: Path | None) -> Path | None:
    """The ``scheduler/`` folder of the pipeline, or next to a bare model folder, if any."""
    for candidate in (pipeline, model.parent):
        if candidate is not None and (candidate / "scheduler").is_dir():
            return candidate / "scheduler"
    return None
