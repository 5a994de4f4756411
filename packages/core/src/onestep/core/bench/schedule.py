"""The benchmark trainers' learning-rate schedule: a cosine from 1 down to a floor."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["cosine_to_floor"]


def cosine_to_floor(opt: torch.optim.Optimizer, steps: int, floor: float) -> LambdaLR:
    """Scale every learning rate of ``opt`` by a cosine from 1 to ``floor`` over ``steps``.

    The factor at update ``i`` is ``floor + (1 - floor) (1 + cos(pi min(i, steps) / steps)) / 2``;
    it stays at ``floor`` after ``steps``.
    """
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"the learning-rate floor is a fraction in [0, 1], got {floor}")
    span = max(steps, 1)

    def factor(i: int) -> float:
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(i, span) / span))

    return LambdaLR(opt, factor)
