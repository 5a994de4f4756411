"""``OfflineDataModule``: uniformly sampled transition batches for offline RL agents.

Offline RL trains for a number of gradient steps, not epochs, drawing each minibatch uniformly
with replacement from the whole dataset (IQL, FQL, Diffusion-QL all do). Here an "epoch" is
``batches_per_epoch`` such batches; batch ``k`` is drawn by a generator seeded with
``(seed, k)``, so the batch sequence is the same with any number of workers and after a resume
at an epoch boundary. Bound runs with the trainer's ``max_steps``.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from onestep.rl.data.checks import to_unit_actions
from onestep.rl.data.dataset import OfflineDataset
from onestep.rl.data.loading import load_dataset
from onestep.rl.data.normalization import (
    REWARD_METHODS,
    normalize_rewards,
    observation_stats,
    reward_transform,
)

__all__ = ["EpochSampler", "OfflineDataModule", "TransitionBatches"]


class TransitionBatches(Dataset):
    """Item ``k`` is a whole batch of ``batch_size`` rows drawn with replacement.

    Args:
        tensors: ``obs``, ``action``, ``reward``, ``next_obs``, ``done``; float32, ``[N, ...]``.
        batch_size: rows per batch.
        seed: base seed; batch ``k`` uses ``np.random.default_rng([seed, k])``.
    """

    def __init__(self, tensors: dict[str, Tensor], batch_size: int, seed: int):
        self.tensors, self.batch_size, self.seed = tensors, batch_size, seed
        self.rows = len(tensors["reward"])

    def __len__(self) -> int:
        return 2**62  # effectively unbounded: the sampler decides which batches are drawn

    def __getitem__(self, k: int) -> dict[str, Tensor]:
        rows = np.random.default_rng([self.seed, k]).integers(0, self.rows, self.batch_size)
        index = torch.from_numpy(rows)
        return {name: t[index] for name, t in self.tensors.items()}  # each (B, ...)


class EpochSampler(Sampler[int]):
    """Yields batch ids ``epoch * n, ..., epoch * n + n - 1``; Lightning calls ``set_epoch``."""

    def __init__(self, batches_per_epoch: int):
        self.batches_per_epoch, self.epoch = batches_per_epoch, 0

    def set_epoch(self, epoch: int) -> None:
        """Move to the batches of ``epoch`` (new ones every epoch)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.batches_per_epoch
        return iter(range(start, start + self.batches_per_epoch))

    def __len__(self) -> int:
        return self.batches_per_epoch


class OfflineDataModule(L.LightningDataModule):
    """Offline RL transitions from a Minari folder or a D4RL-style HDF5 file.

    Batches are dicts of float32 tensors: ``obs`` ``[B, obs_dim]`` and ``next_obs`` (raw, not
    normalised: agents normalise with :attr:`obs_mean` / :attr:`obs_std` inside their networks),
    ``action`` ``[B, act_dim]`` in ``[-1, 1]``, ``reward`` ``[B]`` (after ``normalize_rewards``),
    ``done`` ``[B]`` = terminals only (a timeout is not a terminal state: bootstrap through it).

    Actions recorded in other bounds are mapped to ``[-1, 1]`` affinely (see
    :func:`~onestep.rl.data.checks.to_unit_actions`); actions outside their bounds raise.

    Args:
        path: dataset folder (Minari) or ``.hdf5`` / ``.h5`` file (D4RL layout).
        batch_size: transitions per batch (per process under DDP).
        normalize_rewards: ``"none"``, ``"iql"`` (``r * 1000 / (max - min episode return)``,
            locomotion) or ``"antmaze"`` (``r - 1``); see :mod:`onestep.rl.data.normalization`.
        num_workers: DataLoader workers (0 is fastest for in-memory tensors).
        seed: seed of the batch sampling.
        env_id: gymnasium id, for files that do not record one.
        batches_per_epoch: batches per Lightning epoch.
    """

    def __init__(
        self,
        path: str,
        batch_size: int = 256,
        normalize_rewards: str = "none",
        num_workers: int = 0,
        seed: int = 0,
        env_id: str | None = None,
        batches_per_epoch: int = 1000,
    ):
        super().__init__()
        if normalize_rewards not in REWARD_METHODS:
            raise ValueError(
                f"normalize_rewards must be one of {REWARD_METHODS}, got {normalize_rewards!r}"
            )
        if batch_size < 1 or batches_per_epoch < 1:
            raise ValueError(
                f"batch_size and batches_per_epoch must be >= 1, got {batch_size}, "
                f"{batches_per_epoch}"
            )
        self.path, self.batch_size, self.normalize_rewards = (
            str(path),
            batch_size,
            normalize_rewards,
        )
        self.num_workers, self.seed, self._env_id = num_workers, seed, env_id
        self.batches_per_epoch = batches_per_epoch
        self._dataset: OfflineDataset | None = None
        self._tensors: dict[str, Tensor] = {}
        self._obs_stats: tuple[Tensor, Tensor] | None = None
        self.reward_scale, self.reward_shift = 1.0, 0.0

    def setup(self, stage: str | None = None) -> None:
        """Load, check and convert the dataset (once; later calls do nothing)."""
        if self._dataset is not None:
            return
        dataset = load_dataset(self.path, env_id=self._env_id)
        if len(dataset) == 0:
            raise ValueError(f"{self.path}: the dataset has no transitions")
        dataset = to_unit_actions(dataset)
        self.reward_scale, self.reward_shift = reward_transform(dataset, self.normalize_rewards)
        dataset = normalize_rewards(dataset, self.normalize_rewards)
        mean, std = observation_stats(dataset)
        self._obs_stats = (torch.from_numpy(mean), torch.from_numpy(std))
        self._tensors = {
            "obs": torch.from_numpy(dataset.observations),
            "action": torch.from_numpy(dataset.actions),
            "reward": torch.from_numpy(dataset.rewards),
            "next_obs": torch.from_numpy(dataset.next_observations),
            "done": torch.from_numpy(dataset.terminals.astype(np.float32)),
        }
        self._dataset = dataset

    @property
    def dataset(self) -> OfflineDataset:
        """The loaded dataset (unit actions, normalised rewards); needs :meth:`setup`."""
        if self._dataset is None:
            raise RuntimeError(f"call setup() before using the data of {self.path}")
        return self._dataset

    @property
    def obs_mean(self) -> Tensor:
        """``[obs_dim]`` float32 mean of the dataset's observations; needs :meth:`setup`."""
        return self._stats()[0]

    @property
    def obs_std(self) -> Tensor:
        """``[obs_dim]`` float32 std of the observations, floored at 1e-3; needs :meth:`setup`."""
        return self._stats()[1]

    def _stats(self) -> tuple[Tensor, Tensor]:
        if self._obs_stats is None:
            raise RuntimeError(f"call setup() before using the statistics of {self.path}")
        return self._obs_stats

    @property
    def obs_dim(self) -> int:
        """Observation features."""
        return self.dataset.obs_dim

    @property
    def act_dim(self) -> int:
        """Action dimensions."""
        return self.dataset.act_dim

    @property
    def env_id(self) -> str | None:
        """The gymnasium id of the data (from the file or the ``env_id`` argument)."""
        return self.dataset.env_id if self._dataset is not None else self._env_id

    def train_dataloader(self) -> DataLoader:
        """``batches_per_epoch`` uniformly sampled batches per epoch."""
        batches = TransitionBatches(self._tensors_or_raise(), self.batch_size, self.seed)
        return DataLoader(
            batches,
            batch_size=None,  # items are whole batches
            sampler=EpochSampler(self.batches_per_epoch),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _tensors_or_raise(self) -> dict[str, Tensor]:
        _ = self.dataset
        return self._tensors
