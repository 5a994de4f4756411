"""Small helpers for the loss-health numbers a distribution-matching run logs."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["grad_norm", "per_sample_norm", "trainable"]


def trainable(*modules: nn.Module | None) -> list[nn.Parameter]:
    """The parameters of ``modules`` (``None`` entries skipped), each once."""
    seen: dict[int, nn.Parameter] = {}
    for m in modules:
        if m is not None:
            seen.update({id(p): p for p in m.parameters()})
    return list(seen.values())


def grad_norm(params: Iterable[nn.Parameter], clip: float | None = None) -> Tensor:
    """Total L2 norm of the gradients (before clipping); clips in place to ``clip`` if given."""
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return torch.zeros(())
    max_norm = math.inf if clip is None else clip
    return torch.nn.utils.clip_grad_norm_(with_grad, max_norm).detach()


def per_sample_norm(g: Tensor) -> Tensor:
    """``||g_b||_2`` per sample, ``[B]``."""
    return g.flatten(1).norm(dim=1)
