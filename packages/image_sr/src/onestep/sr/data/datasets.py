"""Map-style SR datasets: random HR training crops, centred validation crops, paired test sets.

Every dataset decodes each of its files once when it is built, so an unreadable or truncated
file raises :class:`~onestep.sr.data.images.ImageReadError` (naming the file) in the main
process, and an image too small for the crop raises ``ValueError`` naming the file and both
sizes, before a DataLoader worker ever starts. Folders are re-read per item (nothing is cached),
in-memory images are used as given.

Items are dicts: ``hr`` ``[3, H, W]`` and ``lr`` ``[3, H / scale, W / scale]`` float32 in [0, 1]
and ``name`` (str). :class:`HRCrops` leaves ``lr`` out when the degradation is ``"realesrgan"``:
that degradation runs batched on the training device (see ``SRDataModule``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeAlias, TypedDict, final

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from onestep.sr.data.degrade import bicubic_downsample, modcrop, random_crop
from onestep.sr.data.images import list_images, load_image

__all__ = [
    "DEGRADATIONS",
    "CenterCrops",
    "EpochSampler",
    "HRCrops",
    "HRItem",
    "PairedFolder",
    "SRItem",
    "check_degradation",
    "pair_key",
]

DEGRADATIONS: tuple[str, ...] = ("bicubic", "realesrgan")

Images: TypeAlias = "str | Path | Sequence[tuple[str, Tensor]]"
"""A folder of image files, or ``(name, [3, H, W] float tensor in [0, 1])`` pairs."""


@final
class HRItem(TypedDict):
    """An HR training crop whose LR is made later, batched: ``hr`` ``[3, H, W]`` and ``name``."""

    hr: Tensor
    name: str


@final
class SRItem(TypedDict):
    """An (HR, LR) pair: ``hr`` ``[3, H, W]``, ``lr`` ``[3, H / scale, W / scale]``, ``name``.

    Both item types are final, so ``"lr" in item`` tells a type checker which one it has.
    """

    hr: Tensor
    lr: Tensor
    name: str


def check_degradation(name: str) -> str:
    """Return ``name`` if it is one of :data:`DEGRADATIONS`, else raise naming the choices."""
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; choose one of {list(DEGRADATIONS)}")
    return name


def _check_scale(scale: int) -> None:
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer (2, 3, 4, ...), got {scale!r}")


def _check_crop(crop: int, scale: int, what: str = "crop") -> None:
    _check_scale(scale)
    if not isinstance(crop, int) or crop < scale or crop % scale:
        raise ValueError(
            f"{what} must be a positive multiple of the scale {scale} (so the LR is "
            f"{what} / {scale} px), got {crop!r}; try {max(scale, round(crop / scale) * scale)}"
        )


class _ImageSource:
    """HR images from a folder or from memory, with names, sizes and a readable description."""

    def __init__(self, images: Images) -> None:
        self.paths: list[Path] = []  # folder mode: re-read per item
        self._tensors: list[Tensor] = []  # memory mode
        if isinstance(images, (str, Path)):
            root = Path(images)
            self.paths = list_images(root)
            self.names = [str(p.relative_to(root).with_suffix("")) for p in self.paths]
            # Decode every file now: bad files fail here, in the main process.
            self.sizes = [tuple(load_image(p).shape[-2:]) for p in self.paths]
            return
        self.names = [name for name, _ in images]
        self._tensors = [img for _, img in images]
        if not self._tensors:
            raise ValueError("no images given; pass a folder or at least one (name, image) pair")
        for name, img in zip(self.names, self._tensors, strict=True):
            if img.ndim != 3 or img.shape[0] != 3 or not img.is_floating_point():
                raise ValueError(
                    f"image {name!r} must be a float [3, H, W] tensor in [0, 1], got "
                    f"{img.dtype} {tuple(img.shape)}"
                )
        self.sizes = [tuple(img.shape[-2:]) for img in self._tensors]

    def __len__(self) -> int:
        return len(self.names)

    def describe(self, i: int) -> str:
        return str(self.paths[i]) if self.paths else f"image {self.names[i]!r}"

    def load(self, i: int) -> Tensor:
        return load_image(self.paths[i]) if self.paths else self._tensors[i]

    def check_min_size(self, size: int, what: str) -> None:
        for i, (h, w) in enumerate(self.sizes):
            if h < size or w < size:
                raise ValueError(
                    f"{self.describe(i)} is {h}x{w}, smaller than the {size}x{size} {what}; "
                    f"lower the {what} size or remove the image"
                )


def _dihedral(x: Tensor, k: int) -> Tensor:
    """One of the 8 flips / 90-degree rotations of ``[C, H, W]`` ``x``, ``k`` in 0..7."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


class HRCrops(Dataset[HRItem | SRItem]):
    """Random ``crop x crop`` HR crops with random flips / rotations, reproducible per index.

    Item ``index`` is a pure function of ``(seed, index)``: image ``index % len(images)`` (so
    every image is used equally), crop position and one of the 8 dihedral transforms drawn from
    ``numpy.random.default_rng([seed, index])``. Any index >= 0 is valid; ``len()`` is
    ``samples_per_epoch``, and :class:`EpochSampler` hands out indices ``epoch * len + i`` so
    each epoch sees new crops and a given epoch is the same in every run.
    """

    def __init__(
        self,
        images: Images,
        crop: int,
        scale: int = 4,
        samples_per_epoch: int = 512,
        degradation: str = "bicubic",
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        """Check sizes and decode every file once.

        Args:
            images: a folder of HR images or ``(name, [3, H, W])`` pairs.
            crop: HR crop side; a multiple of ``scale``.
            scale: SR factor.
            samples_per_epoch: ``len()`` of the dataset.
            degradation: ``"bicubic"`` (items carry their bicubic ``lr``) or ``"realesrgan"``
                (no ``lr``: made batched later).
            seed: seed of every crop position and transform.
            augment: apply a random flip / 90-degree rotation.

        Raises:
            ValueError: crop not a multiple of scale, unknown degradation, or an image smaller
                than the crop (naming the file and both sizes).
            ImageReadError: an unreadable or truncated file (naming it).
        """
        _check_crop(crop, scale)
        if samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        self.degradation = check_degradation(degradation)
        self.source = _ImageSource(images)
        self.source.check_min_size(crop, "crop")
        self.crop, self.scale, self.seed, self.augment = crop, scale, seed, augment
        self.samples_per_epoch = samples_per_epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> HRItem | SRItem:
        if index < 0:
            raise IndexError(f"HRCrops indices are >= 0, got {index}")
        rng = np.random.default_rng([self.seed, index])
        i = index % len(self.source)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        hr = random_crop(self.source.load(i), self.crop, generator)
        if self.augment:
            hr = _dihedral(hr, int(rng.integers(8)))
        hr, name = hr.contiguous(), self.source.names[i]
        if self.degradation == "bicubic":
            return {"hr": hr, "lr": bicubic_downsample(hr, self.scale), "name": name}
        return {"hr": hr, "name": name}


class EpochSampler(Sampler[int]):
    """Indices ``epoch * n, ..., epoch * n + n - 1`` for an :class:`HRCrops` of length ``n``.

    Lightning calls ``set_epoch`` on the sampler at the start of every epoch (also through its
    distributed wrapper), so epoch ``e`` draws crops ``(seed, e * n + i)``: new crops each epoch,
    the same ones in every run and after a resume.
    """

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the block of indices of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.epoch * self.n, (self.epoch + 1) * self.n))


class CenterCrops(Dataset[SRItem]):
    """Deterministic validation items: the centred ``crop x crop`` of each image, bicubic LR.

    With ``crop=None`` the whole image is used, cut to a multiple of ``scale`` (bottom / right,
    :func:`~onestep.sr.data.modcrop`); items then differ in size, so batch them one at a time.
    """

    def __init__(self, images: Images, scale: int = 4, crop: int | None = 128) -> None:
        """Check sizes and decode every file once.

        Raises:
            ValueError: crop not a multiple of scale, or an image smaller than the crop.
            ImageReadError: an unreadable or truncated file.
        """
        if crop is not None:
            _check_crop(crop, scale, "val crop")
        self.source = _ImageSource(images)
        self.source.check_min_size(crop if crop is not None else scale, "val crop")
        self.scale, self.crop = scale, crop

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> SRItem:
        img = self.source.load(index)
        if self.crop is None:
            hr = modcrop(img, self.scale)
        else:
            h, w = img.shape[-2:]
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
            hr = img[:, top : top + self.crop, left : left + self.crop]
        hr = hr.contiguous()
        return {
            "hr": hr,
            "lr": bicubic_downsample(hr, self.scale),
            "name": self.source.names[index],
        }


# One trailing role/scale token: "_HR", "_LR", "_LR4", "-hr2" (RealSR), "_x4", "_x1" (DRealSR),
# "x4" (DIV2K's "0801x4"). Case-insensitive.
_PAIR_SUFFIX = re.compile(r"(?:[_-](?:hr|lr)\d*|[_-]?x\d+)$", re.IGNORECASE)
_ROLE = re.compile(r"[_-](hr|lr)\d*$", re.IGNORECASE)


def pair_key(stem: str) -> str:
    """The pairing key of a file stem: the stem minus one trailing ``_HR``/``_LR4``/``_x4`` token.

    ``"Canon_001_LR4"`` and ``"Canon_001_HR"`` -> ``"Canon_001"``; ``"0801x4"`` and ``"0801"`` ->
    ``"0801"``; ``"DSC_1454_x4"`` and ``"DSC_1454_x1"`` -> ``"DSC_1454"``.
    """
    return _PAIR_SUFFIX.sub("", stem) or stem


def _index_by_key(files: list[Path], root: Path, role: str) -> dict[str, Path]:
    by_key: dict[str, Path] = {}
    for path in files:
        rel = path.relative_to(root)
        key = str(rel.parent / pair_key(rel.stem))
        if key in by_key:
            raise ValueError(
                f"{by_key[key]} and {path} both pair as {key!r} among the {role} files; "
                "rename one of them"
            )
        by_key[key] = path
    return by_key


class PairedFolder(Dataset[SRItem]):
    """A real-world test set: LR files paired with HR files (RealSR / DRealSR / DIV2K layouts).

    Pairing rule: each file's key is its path relative to its folder with one trailing
    ``_HR`` / ``_LR<n>`` / ``_x<n>`` / ``x<n>`` token removed from the stem (:func:`pair_key`);
    LR and HR files pair by equal keys, and every file must have a partner. When ``lr_dir`` and
    ``hr_dir`` are the same folder (RealSR v3: ``Canon_001_HR.png`` next to
    ``Canon_001_LR4.png``), files ending in ``_LR<n>`` are LR and those ending in ``_HR<n>`` HR.

    Sizes: HR must be ``scale`` times the LR; an HR up to ``scale - 1`` px larger (a size not a
    multiple of the scale, e.g. Set14) is cut to the multiple (:func:`~onestep.sr.data.modcrop`),
    the standard convention. Anything else raises, naming both files.
    """

    def __init__(self, lr_dir: str | Path, hr_dir: str | Path, scale: int = 4) -> None:
        """Pair the files and decode each once.

        Raises:
            ValueError: unpaired files, two files with one key, or an HR/LR size mismatch
                (naming both files and their sizes).
            ImageReadError: an unreadable or truncated file.
        """
        _check_scale(scale)
        lr_root, hr_root = Path(lr_dir), Path(hr_dir)
        lr_files, hr_files = list_images(lr_root), list_images(hr_root)
        if lr_root.resolve() == hr_root.resolve():
            lr_files = [p for p in lr_files if _role(p) == "lr"]
            hr_files = [p for p in hr_files if _role(p) == "hr"]
        lr_by_key = _index_by_key(lr_files, lr_root, "LR")
        hr_by_key = _index_by_key(hr_files, hr_root, "HR")
        for have, lack, folder in (
            (lr_by_key, hr_by_key, hr_root),
            (hr_by_key, lr_by_key, lr_root),
        ):
            alone = sorted(set(have) - set(lack))
            if alone:
                raise ValueError(
                    f"{len(alone)} file(s) have no partner in {folder}: "
                    f"{[str(have[k]) for k in alone[:5]]}; pairing rule: same name up to a "
                    "trailing _HR/_LR4/_x4 token"
                )
        self.scale = scale
        self.pairs = [(key, lr_by_key[key], hr_by_key[key]) for key in sorted(lr_by_key)]
        for _, lr_path, hr_path in self.pairs:
            self._check_sizes(lr_path, hr_path)

    def _check_sizes(self, lr_path: Path, hr_path: Path) -> None:
        h, w = load_image(lr_path).shape[-2:]
        big_h, big_w = load_image(hr_path).shape[-2:]
        if big_h // self.scale != h or big_w // self.scale != w:
            raise ValueError(
                f"HR {hr_path} is {big_h}x{big_w} but LR {lr_path} is {h}x{w}: at scale "
                f"{self.scale} the HR must be {h * self.scale}x{w * self.scale}; check the scale "
                "or the pairing"
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> SRItem:
        key, lr_path, hr_path = self.pairs[index]
        hr = modcrop(load_image(hr_path), self.scale).contiguous()
        return {"lr": load_image(lr_path), "hr": hr, "name": key}


def _role(path: Path) -> str | None:
    match = _ROLE.search(path.stem)
    return match.group(1).lower() if match else None
