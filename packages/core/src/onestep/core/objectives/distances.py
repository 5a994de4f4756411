"""Per-sample distances shared by the trajectory objectives (consistency, CTM, rectified flow).

Each returns ``[B]``: a reduction over every non-batch dimension, no batch reduction.
"""

from __future__ import annotations

import math

from torch import Tensor

from onestep.core.objectives.dsm import mean_flat

__all__ = ["DISTANCES", "distance", "ict_huber_c", "pseudo_huber", "squared_l2"]

DISTANCES: tuple[str, ...] = ("l2", "pseudo_huber")


def squared_l2(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared difference per sample, ``[B]``."""
    return mean_flat((a - b) ** 2)


def ict_huber_c(x: Tensor) -> float:
    """Improved CT's pseudo-Huber scale ``c = 0.00054 sqrt(d)`` for samples like ``x``.

    Song & Dhariwal 2023 (improved consistency training), sec. 3.3: ``d`` is the number of
    elements of one sample, e.g. ``d = 3 * 64 * 64``.
    """
    return 0.00054 * math.sqrt(x[0].numel())


def pseudo_huber(a: Tensor, b: Tensor, c: float | None = None) -> Tensor:
    """Pseudo-Huber distance ``sqrt(||a - b||^2 + c^2) - c`` per sample, ``[B]``.

    Song & Dhariwal 2023 (improved CT), eq. 9; also RF++ (Lee et al. 2024, sec. 4). Unlike
    :func:`squared_l2` it sums over elements (the norm of the whole sample), so ``c`` is in the
    units of that norm. Quadratic below ``c``, linear above: outliers pull less than in L2.

    Args:
        a: prediction, ``[B, ...]``.
        b: target, same shape.
        c: scale (> 0); default :func:`ict_huber_c` of ``a``.
    """
    c = ict_huber_c(a) if c is None else c
    if c <= 0:
        raise ValueError(f"pseudo_huber needs c > 0, got {c}")
    sq = ((a - b) ** 2).flatten(1).sum(dim=1)
    return (sq + c * c).sqrt() - c


def distance(name: str, a: Tensor, b: Tensor, c: float | None = None) -> Tensor:
    """The per-sample distance called ``name`` (``"l2"`` or ``"pseudo_huber"``)."""
    if name == "l2":
        return squared_l2(a, b)
    if name == "pseudo_huber":
        return pseudo_huber(a, b, c)
    raise ValueError(f"unknown distance {name!r}; use one of {DISTANCES}")
