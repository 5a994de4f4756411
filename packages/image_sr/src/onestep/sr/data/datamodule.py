"""The Lightning data module of one-step SR: HR crops in, ``{"hr", "lr", "name"}`` batches out.

Batches are dicts with ``hr`` ``[B, 3, H, W]``, ``lr`` ``[B, 3, H / scale, W / scale]`` (float32
in [0, 1]) and ``name`` (``list[str]``). With no folders given, training uses the five embedded
training photos and validation / test the two held-out ones (:mod:`onestep.sr.data.samples`), so
``fit`` works offline out of the box.

Degradations: ``"bicubic"`` makes the training LR in the dataset (workers); ``"realesrgan"``
leaves it out there and makes it in :meth:`SRDataModule.on_after_batch_transfer`, batched on the
training device (Wang et al. 2021). Validation and test LR are always deterministic: bicubic of
the held-out crops, or the LR files of a paired test set.

Reproducibility: training crop ``i`` of epoch ``e`` is a function of ``(seed, e *
samples_per_epoch + i)`` (:class:`~onestep.sr.data.datasets.HRCrops`,
:class:`~onestep.sr.data.datasets.EpochSampler`). The Real-ESRGAN LR of the ``k``-th training
batch (counted from 0 per process; the count is saved in checkpoints) on global rank ``r`` uses a
generator seeded from ``(seed, r, k)``: the same run on the same device type gives the same LR
batches, also after a resume.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from onestep.sr.data.datasets import (
    CenterCrops,
    EpochSampler,
    HRCrops,
    PairedFolder,
    check_degradation,
)
from onestep.sr.data.realesrgan import RealESRGANDegradation
from onestep.sr.data.samples import embedded_photos

__all__ = ["SRDataModule"]


class SRDataModule(L.LightningDataModule):
    """HR training crops, held-out validation crops and a paired (or embedded) test set."""

    def __init__(
        self,
        train_hr: str | None = None,
        val_hr: str | None = None,
        test_lr: str | None = None,
        test_hr: str | None = None,
        scale: int = 4,
        crop: int = 64,
        degradation: str = "bicubic",
        batch_size: int = 8,
        samples_per_epoch: int = 512,
        val_crop: int = 128,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        """Check the options; files are read in :meth:`setup`.

        Args:
            train_hr: folder of HR training images; ``None`` -> the embedded training photos.
            val_hr: folder of held-out HR images; ``None`` -> the embedded validation photos.
            test_lr: folder of LR test images (paired with ``test_hr``).
            test_hr: folder of HR test images (paired with ``test_lr``); with both ``None`` the
                test set is the whole held-out embedded photos with bicubic LR.
            scale: SR factor.
            crop: HR training crop side, a multiple of ``scale``.
            degradation: training LR model, ``"bicubic"`` or ``"realesrgan"``.
            batch_size: training and validation batch size (test images vary in size, so the
                test loader uses 1).
            samples_per_epoch: training crops per epoch.
            val_crop: side of the centred validation crop, a multiple of ``scale``.
            num_workers: DataLoader worker processes.
            seed: seed of training crops, flips and Real-ESRGAN degradations.

        Raises:
            ValueError: an unknown degradation (listing the choices), a scale < 1, crops that
                are not multiples of the scale or too small for Real-ESRGAN, or only one of
                ``test_lr`` / ``test_hr``.
        """
        super().__init__()
        self.save_hyperparameters()
        check_degradation(degradation)
        if scale < 1:
            raise ValueError(f"scale must be a positive integer (2, 3, 4, ...), got {scale}")
        for name, value in (("crop", crop), ("val_crop", val_crop)):
            if value < scale or value % scale:
                raise ValueError(
                    f"{name} must be a positive multiple of scale {scale}, got {value}; try "
                    f"{max(scale, round(value / scale) * scale)}"
                )
        for name, value in (("batch_size", batch_size), ("samples_per_epoch", samples_per_epoch)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if (test_lr is None) != (test_hr is None):
            raise ValueError(
                f"give both test_lr and test_hr (a paired test set) or neither (the held-out "
                f"embedded photos), got test_lr={test_lr!r}, test_hr={test_hr!r}"
            )
        self.realesrgan: RealESRGANDegradation | None = None
        if degradation == "realesrgan":
            self.realesrgan = RealESRGANDegradation(scale=scale)
            if crop // scale < self.realesrgan.min_lr_side:
                raise ValueError(
                    f"crop {crop} at scale {scale} gives {crop // scale} px LR crops; the "
                    f"Real-ESRGAN degradation needs >= {self.realesrgan.min_lr_side} px: use "
                    f"crop >= {self.realesrgan.min_lr_side * scale}"
                )
        self.train_hr, self.val_hr, self.test_lr, self.test_hr = train_hr, val_hr, test_lr, test_hr
        self.scale, self.crop, self.val_crop = scale, crop, val_crop
        self.degradation, self.batch_size = degradation, batch_size
        self.samples_per_epoch, self.num_workers, self.seed = samples_per_epoch, num_workers, seed
        self.train_set: HRCrops | None = None
        self.val_set: CenterCrops | None = None
        self.test_set: CenterCrops | PairedFolder | None = None
        self.realesrgan_batches = 0  # batches degraded so far (seeds the next one)

    def setup(self, stage: str | None = None) -> None:
        """Build (and so validate every file of) the datasets ``stage`` needs."""
        if stage in (None, "fit") and self.train_set is None:
            train = self.train_hr if self.train_hr is not None else embedded_photos("train")
            self.train_set = HRCrops(
                train,
                crop=self.crop,
                scale=self.scale,
                samples_per_epoch=self.samples_per_epoch,
                degradation=self.degradation,
                seed=self.seed,
            )
        if stage in (None, "fit", "validate") and self.val_set is None:
            val = self.val_hr if self.val_hr is not None else embedded_photos("val")
            self.val_set = CenterCrops(val, scale=self.scale, crop=self.val_crop)
        if stage in (None, "test") and self.test_set is None:
            if self.test_lr is not None and self.test_hr is not None:
                self.test_set = PairedFolder(self.test_lr, self.test_hr, scale=self.scale)
            else:
                self.test_set = CenterCrops(embedded_photos("val"), scale=self.scale, crop=None)

    def _loader(self, data: Dataset[Any] | None, stage: str, **kwargs: Any) -> DataLoader:
        if data is None:
            raise RuntimeError(f"call setup({stage!r}) before asking for the {stage} dataloader")
        return DataLoader(
            data,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """``samples_per_epoch`` fresh crops per epoch (see the module's reproducibility rule)."""
        n = self.samples_per_epoch
        return self._loader(
            self.train_set, "fit", batch_size=self.batch_size, sampler=EpochSampler(n)
        )

    def val_dataloader(self) -> DataLoader:
        """Centred crops of the held-out images, in a fixed order."""
        return self._loader(self.val_set, "validate", batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        """Whole test images, one per batch (their sizes differ)."""
        return self._loader(self.test_set, "test", batch_size=1)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Add the Real-ESRGAN ``lr`` to training batches, on the device they now live on.

        Only batches without ``lr`` are touched (Real-ESRGAN training batches); validation and
        test batches always carry their deterministic LR.
        """
        if not isinstance(batch, dict) or "lr" in batch or self.realesrgan is None:
            return batch
        rank = self.trainer.global_rank if self.trainer is not None else 0
        seed = np.random.SeedSequence([self.seed, rank, self.realesrgan_batches])
        generator = torch.Generator().manual_seed(int(seed.generate_state(1, np.uint64)[0] >> 2))
        self.realesrgan_batches += 1
        return {**batch, "lr": self.realesrgan(batch["hr"], generator=generator)}

    def state_dict(self) -> dict[str, Any]:
        """The Real-ESRGAN batch count, so a resumed run continues the same LR sequence."""
        return {"realesrgan_batches": self.realesrgan_batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.realesrgan_batches = int(state_dict.get("realesrgan_batches", 0))
