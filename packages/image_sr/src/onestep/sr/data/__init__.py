"""Data for one-step super-resolution: image files in, ``[3, H, W]`` tensors in [0, 1] out.

``SRDataModule`` (``onestep.sr.data.datamodule``) is loaded on first access, so importing this
package does not import ``lightning``; basicsr is imported only when a degradation first runs.
"""

from typing import TYPE_CHECKING, Any

from onestep.sr.data.datasets import (
    DEGRADATIONS,
    CenterCrops,
    EpochSampler,
    HRCrops,
    PairedFolder,
    check_degradation,
    pair_key,
)
from onestep.sr.data.degrade import bicubic_downsample, modcrop, random_crop
from onestep.sr.data.images import IMAGE_SUFFIXES, ImageReadError, list_images, load_image
from onestep.sr.data.realesrgan import (
    DegradationStage,
    RealESRGANConfig,
    RealESRGANDegradation,
    usm_sharpen_gt,
)
from onestep.sr.data.samples import EMBEDDED_TRAIN, EMBEDDED_VAL, embedded_photos

if TYPE_CHECKING:
    from onestep.sr.data.datamodule import SRDataModule

__all__ = [
    "DEGRADATIONS",
    "EMBEDDED_TRAIN",
    "EMBEDDED_VAL",
    "IMAGE_SUFFIXES",
    "CenterCrops",
    "DegradationStage",
    "EpochSampler",
    "HRCrops",
    "ImageReadError",
    "PairedFolder",
    "RealESRGANConfig",
    "RealESRGANDegradation",
    "SRDataModule",
    "bicubic_downsample",
    "check_degradation",
    "embedded_photos",
    "list_images",
    "load_image",
    "modcrop",
    "pair_key",
    "random_crop",
    "usm_sharpen_gt",
]


def __getattr__(name: str) -> Any:
    if name == "SRDataModule":
        from onestep.sr.data.datamodule import SRDataModule

        return SRDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
