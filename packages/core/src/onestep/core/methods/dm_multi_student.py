"""Multi-student distillation (MSD, Song et al. 2024): K students, each owning part of the labels.

Each student serves only the condition labels of its partition, so a smaller student can match a
large teacher on its share. :class:`MultiStudent` routes every sample to its owner and is itself a
Denoiser, so ``DistributionMatching`` trains all K students at once, each receiving gradient only
from its own samples (the fake score, conditioned on the label, tracks every student's share).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from onestep.core.denoiser import DenoiserBase

__all__ = ["MultiStudent"]


def _even_partition(num_classes: int, k: int) -> list[list[int]]:
    """Contiguous, near-equal blocks of ``0..num_classes-1``."""
    bounds = [round(i * num_classes / k) for i in range(k + 1)]
    return [list(range(bounds[i], bounds[i + 1])) for i in range(k)]


class MultiStudent(DenoiserBase):
    """Route each sample to the student that owns its condition label.

    Args:
        students: the K Denoiser-like students (same process).
        num_classes: size of the label space ``0..num_classes-1``.
        partition: labels owned by each student (a partition of the label space); default:
            contiguous near-equal blocks.
    """

    owner: Tensor  # (num_classes,), buffer: label -> student index

    def __init__(
        self,
        students: list[nn.Module],
        num_classes: int,
        partition: list[list[int]] | None = None,
    ):
        super().__init__()
        if not students or num_classes < len(students):
            raise ValueError(
                f"need 1 <= K <= num_classes students, got K={len(students)}, {num_classes=}"
            )
        parts = _even_partition(num_classes, len(students)) if partition is None else partition
        flat = sorted(label for part in parts for label in part)
        if len(parts) != len(students) or flat != list(range(num_classes)):
            raise ValueError(
                f"partition must split 0..{num_classes - 1} into {len(students)} disjoint sets "
                f"(one per student), got {parts}"
            )
        self.students = nn.ModuleList(students)
        self.process = students[0].process  # pyright: ignore[reportAttributeAccessIssue]
        owner = torch.empty(num_classes, dtype=torch.long)
        for k, part in enumerate(parts):
            owner[part] = k
        self.register_buffer("owner", owner)
        self.partition = [list(p) for p in parts]

    def forward(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """``x0`` from each sample's owner; ``cond`` must be long labels ``[B]``."""
        if not torch.is_tensor(cond) or cond.is_floating_point() or cond.shape != t.shape:
            raise ValueError(
                "MultiStudent routes by label: cond must be long labels [B] "
                "(NoiseDataModule num_classes > 0)"
            )
        if bool(((cond < 0) | (cond >= self.owner.numel())).any()):
            raise ValueError(f"labels must lie in 0..{self.owner.numel() - 1}, got {cond.tolist()}")
        which = self.owner[cond]
        out = torch.zeros_like(x_t)
        for k, student in enumerate(self.students):
            idx = (which == k).nonzero().squeeze(1)
            if idx.numel():
                out = out.index_put((idx,), student(x_t[idx], t[idx], cond[idx]))
        return out
