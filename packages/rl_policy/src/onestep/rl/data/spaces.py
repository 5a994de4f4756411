"""Box spaces as JSON-ready dicts, in Minari's serialisation format.

Minari stores ``observation_space`` / ``action_space`` in ``metadata.json`` as the JSON string of
``{"type": "Box", "dtype", "shape", "low", "high"}`` (``minari/serialization.py``). Datasets carry
the same dict in their metadata, so the action bounds travel with the data and the data module
can check and rescale actions without building the environment.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = ["box_bounds", "describe_box", "unbounded_box"]


def describe_box(space: spaces.Space) -> dict[str, Any]:
    """Minari's dict for a Box space (``low`` / ``high`` as lists; infinities stay floats)."""
    if not isinstance(space, spaces.Box):
        raise ValueError(f"only Box spaces are supported, got {space}")
    return {
        "type": "Box",
        "dtype": str(space.dtype),
        "shape": list(space.shape),
        "low": space.low.tolist(),
        "high": space.high.tolist(),
    }


def unbounded_box(dim: int, dtype: str = "float32") -> dict[str, Any]:
    """The description of ``Box(-inf, inf, (dim,))``: used when the real space is unknown."""
    return {
        "type": "Box",
        "dtype": dtype,
        "shape": [dim],
        "low": [-float("inf")] * dim,
        "high": [float("inf")] * dim,
    }


def box_bounds(description: dict[str, Any], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` float64 arrays of shape ``[dim]`` from a Box description.

    Raises:
        ValueError: not a Box, or bounds of another size.
    """
    if description.get("type") != "Box":
        raise ValueError(f"expected a Box space description, got {description.get('type')!r}")
    low = np.broadcast_to(np.asarray(description["low"], dtype=np.float64), (dim,)).copy()
    high = np.broadcast_to(np.asarray(description["high"], dtype=np.float64), (dim,)).copy()
    return low, high
