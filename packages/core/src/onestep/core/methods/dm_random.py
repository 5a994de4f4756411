"""Randomness that does not depend on how many processes share a batch.

Each process draws the random tensor for the **global** batch from a generator seeded by
``(seed, iteration)`` and keeps its own rows. The DistributedSampler of an unshuffled dataset
hands rank ``r`` of ``W`` the items ``r, r + W, r + 2W, ...`` of each global batch, so rank ``r``
keeps rows ``r::W``. One process with batch ``B`` and ``W`` processes with ``B / W`` each then use
the same times and noise for the same items (the DDP-equivalence test relies on it), and a resumed
run redraws exactly what it would have drawn (per-step seeding, as in EDM2's training loop).

Under gradient accumulation (automatic optimisation with ``accumulate_grad_batches = k``) one
optimizer step sees ``k`` micro-batches; :func:`micro_batch_iteration` numbers them
``global_step * k + batch_idx % k`` so that each micro-batch gets its own draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["GlobalBatchRNG", "micro_batch_iteration"]


def micro_batch_iteration(module: Any, batch_idx: int) -> int:
    """The draw index of this micro-batch: ``global_step * k + batch_idx % k``.

    ``k`` is the trainer's ``accumulate_grad_batches`` (1 without a trainer). Lightning's
    ``global_step`` counts optimizer steps, so reseeding on it alone would repeat the same times
    and noise for all ``k`` micro-batches of one accumulated step. The index is unique per
    micro-batch also across epochs (an epoch that ends mid-accumulation steps the optimizer, so
    ``global_step`` moves on before ``batch_idx`` restarts at 0).

    Args:
        module: the LightningModule (``global_step`` and ``trainer``).
        batch_idx: the ``batch_idx`` of ``training_step``.
    """
    trainer = getattr(module, "_trainer", None)
    k = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
    return int(module.global_step) * k + batch_idx % k


class GlobalBatchRNG:
    """Per-step, per-rank slices of global-batch random draws.

    Args:
        seed: base seed.
        rank: this process's rank.
        world_size: number of processes sharing each global batch.
    """

    def __init__(self, seed: int = 0, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, {world_size=}")
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.generator = torch.Generator()
        self.reseed(0)

    def __getstate__(self) -> dict:
        # torch.Generator does not pickle (DDP spawn pickles the module); it is rebuilt.
        return {k: v for k, v in self.__dict__.items() if k != "generator"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.generator = torch.Generator()
        self.reseed(0)

    def start(self, module: Any, iteration: int) -> None:
        """Take ``module``'s rank and world size, then :meth:`reseed` for ``iteration``."""
        self.rank, self.world_size = module.global_rank, module.trainer.world_size
        self.reseed(iteration)

    def reseed(self, iteration: int) -> None:
        """Start the draws of training iteration ``iteration``."""
        self.generator.manual_seed(self.seed * 1_000_003 + iteration)

    def _global(self, shape: Sequence[int]) -> tuple[int, ...]:
        return (shape[0] * self.world_size, *shape[1:])

    def _mine(self, draw: Tensor, device: torch.device | str | None) -> Tensor:
        return draw[self.rank :: self.world_size].to(device)

    def randn(self, shape: Sequence[int], device: torch.device | str | None = None) -> Tensor:
        """Standard normal ``[B_local, ...]``: this rank's rows of a global ``[B W, ...]`` draw."""
        return self._mine(torch.randn(self._global(shape), generator=self.generator), device)

    def uniform(
        self, n: int, lo: float, hi: float, device: torch.device | str | None = None
    ) -> Tensor:
        """``U[lo, hi]`` of shape ``[n]`` (this rank's rows of a global draw)."""
        u = torch.rand(self._global([n]), generator=self.generator)
        return self._mine(lo + (hi - lo) * u, device)

    def randint(self, high: int) -> int:
        """One integer in ``0..high-1``, the same on every rank."""
        return int(torch.randint(high, (1,), generator=self.generator))
