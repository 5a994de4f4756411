"""Data-free training data: a LightningDataModule that yields noise (and optional conditions).

Distribution-matching students (DMD, VSD, SiD, ...) never need data: each batch is the latent
noise ``z`` the student maps to a sample, optional condition labels, and, for methods with a GAN
term on real data (DMD2), optional real samples from a :class:`RealData` source.

Every item is a pure function of ``(seed, index)``, so a batch does not depend on how many
processes split it: one process with global batch ``B`` and two DDP processes with ``B / 2``
each see exactly the same samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["NoiseDataModule", "NoiseDataset", "RealData"]


class RealData:
    """A source of real samples for optional data terms (subclass and override :meth:`sample`)."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` real samples, ``[n, ...]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample(n, generator)")


def _item_generator(seed: int, index: int) -> torch.Generator:
    # A large odd multiplier keeps (seed, index) pairs from colliding for realistic sizes.
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


class NoiseDataset(Dataset):
    """``length`` items ``{"z": [*shape], "cond": long [] (optional), "x0": [...] (optional)}``.

    Args:
        shape: shape of one latent ``z`` (e.g. ``[2]`` for 2-D toys, ``[4, 64, 64]`` for latents).
        length: number of items.
        num_classes: when > 0, each item carries a label ``cond`` uniform in ``0..num_classes-1``.
        real: optional source of real samples; each item then carries one as ``x0``.
        seed: base seed; item ``i`` is drawn from its own generator seeded by ``(seed, i)``.
    """

    def __init__(
        self,
        shape: Sequence[int],
        length: int,
        num_classes: int = 0,
        real: RealData | None = None,
        seed: int = 0,
    ):
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: unconditional), got {num_classes}")
        self.shape = tuple(int(s) for s in shape)
        self.length, self.num_classes, self.real, self.seed = length, num_classes, real, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        gen = _item_generator(self.seed, index)
        item = {"z": torch.randn(self.shape, generator=gen)}
        if self.num_classes:
            item["cond"] = torch.randint(self.num_classes, (), generator=gen)
        if self.real is not None:
            item["x0"] = self.real.sample(1, gen)[0]
        return item


class NoiseDataModule(L.LightningDataModule):
    """Noise batches for data-free distillation (optionally with labels and real samples).

    Args:
        shape: shape of one latent ``z``, e.g. ``[2]``.
        batch_size: items per batch **per process**; under DDP the global batch is
            ``batch_size * world_size``.
        num_batches: batches per epoch (for one process; DDP splits them between processes).
        num_classes: when > 0, batches carry labels ``cond`` (``[B]``, long).
        real: optional real-data source for GAN / f-divergence terms (batches carry ``x0``).
        seed: base seed of the per-item generators.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        shape: list[int],
        batch_size: int = 128,
        num_batches: int = 100,
        num_classes: int = 0,
        real: RealData | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        if batch_size < 1 or num_batches < 1:
            raise ValueError(
                f"batch_size and num_batches must be >= 1, got {batch_size}, {num_batches}"
            )
        self.shape, self.batch_size, self.num_batches = list(shape), batch_size, num_batches
        self.num_classes, self.real, self.seed = num_classes, real, seed
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        """Unshuffled, so the items of a step do not depend on the number of processes.

        Under DDP an unshuffled ``DistributedSampler`` is set here (Lightning's automatic one
        shuffles training data): rank ``r`` of ``W`` gets items ``r, r + W, ...``, so global
        batch ``k`` holds the same items for any ``W``.
        """
        dataset = NoiseDataset(
            self.shape, self.batch_size * self.num_batches, self.num_classes, self.real, self.seed
        )
        trainer = self.trainer
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            sampler = DistributedSampler(
                dataset, trainer.world_size, trainer.global_rank, shuffle=False, drop_last=True
            )
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers
        )
