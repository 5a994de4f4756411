"""``BanditDataModule``: the 2-D bandit (:mod:`onestep.rl.bandit`) as a Lightning data module.

The tiny configs train on it, so ``onestep-rl fit --config configs/ofql/tiny.yaml`` needs no
collected dataset. It offers ``obs_mean`` / ``obs_std`` (zeros / ones: the bandit's one state is
the zero vector) like :class:`~onestep.rl.data.OfflineDataModule`.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from onestep.rl.bandit import BanditBatches, bandit_dataset

__all__ = ["BanditDataModule"]


class BanditDataModule(L.LightningDataModule):
    """Random batches of ``n`` bandit transitions, forever (bound the run with ``max_steps``).

    Args:
        n: transitions drawn once from the behaviour mixture (a multiple of 4).
        batch_size: transitions per batch.
        seed: seed of the transitions and of the batch draws.
        obs_dim: size of the constant observation (2, as in Diffusion-QL's toy).
    """

    def __init__(self, n: int = 4096, batch_size: int = 256, seed: int = 0, obs_dim: int = 2):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.data = bandit_dataset(n, seed, obs_dim=obs_dim)  # validates n
        self.obs_mean: Tensor = torch.zeros(obs_dim)
        self.obs_std: Tensor = torch.ones(obs_dim)
        self.obs_dim, self.act_dim = obs_dim, 2
        self.env_id = None

    def train_dataloader(self) -> DataLoader:
        """Endless uniformly drawn batches (items are whole batches)."""
        return DataLoader(BanditBatches(self.data, self.batch_size, self.seed), batch_size=None)
