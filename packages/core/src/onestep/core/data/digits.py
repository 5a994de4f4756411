"""The sklearn handwritten digits (1,797 images of 8x8, values 0..16) as tensors in [-1, 1].

The data ships inside scikit-learn (``sklearn.datasets.load_digits``), so nothing is downloaded:
it is the embedded data set of ``onestep demo`` and of CPU tests that need real images.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["DigitsDataModule", "load_digits_tensor"]

_SPLITS = ("all", "train", "val")


def _split_indices(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """A fixed permutation of ``range(n)`` cut into (train, val) by ``val_fraction``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(n * val_fraction)
    return perm[n_val:], perm[:n_val]


def load_digits_tensor(
    *,
    size: int = 8,
    split: str = "all",
    val_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Load the sklearn digits as ``(images [N, 1, size, size] in [-1, 1], labels [N])``.

    Args:
        size: image side; 8 is native, larger sizes are upsampled bilinearly.
        split: ``"all"``, ``"train"`` or ``"val"``; the split is a seeded permutation, so the same
            ``(val_fraction, seed)`` always gives the same images.
        val_fraction: share of the images held out as ``"val"``, in [0, 1).
        seed: seed of the split permutation.

    Returns:
        Float32 images scaled from 0..16 to [-1, 1] and int64 labels 0..9.
    """
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {_SPLITS}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    if size < 8:
        raise ValueError(f"size must be >= 8 (the native resolution), got {size}")
    from sklearn.datasets import load_digits  # imported here: sklearn is slow to import

    pixels, target = load_digits(return_X_y=True)  # (N, 64) in 0..16, (N,)
    images = torch.as_tensor(pixels, dtype=torch.float32).reshape(-1, 1, 8, 8)  # (N, 1, 8, 8)
    images = images / 8.0 - 1.0  # 0..16 -> [-1, 1]
    labels = torch.as_tensor(target, dtype=torch.int64)
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        images = images.clamp(-1.0, 1.0)
    if split == "all":
        return images, labels
    train, val = _split_indices(images.shape[0], val_fraction, seed)
    idx = train if split == "train" else val
    return images[idx], labels[idx]


class DigitsDataModule(L.LightningDataModule):
    """Lightning data module over the sklearn digits, yielding ``(images, labels)`` batches.

    Args:
        batch_size: images per batch.
        size: image side (8 native; larger is bilinear upsampling).
        val_fraction: share of the images held out for validation.
        num_workers: DataLoader worker processes.
        seed: seed of the train/val split and of the training shuffle.
    """

    def __init__(
        self,
        batch_size: int = 128,
        size: int = 8,
        val_fraction: float = 0.1,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.size = size
        self.val_fraction = val_fraction
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Build both splits (cheap: the whole data set is 1,797 small images)."""
        kw = {"size": self.size, "val_fraction": self.val_fraction, "seed": self.seed}
        self.train_set = TensorDataset(*load_digits_tensor(split="train", **kw))
        self.val_set = TensorDataset(*load_digits_tensor(split="val", **kw))

    def _loader(self, data: TensorDataset | None, shuffle: bool) -> DataLoader:
        if data is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            data,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (seeded)."""
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader(self.val_set, shuffle=False)
