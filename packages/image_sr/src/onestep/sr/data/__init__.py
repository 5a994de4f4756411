"""Data for one-step super-resolution: image files in, ``[3, H, W]`` tensors in [0, 1] out."""

from onestep.sr.data.degrade import bicubic_downsample, modcrop, random_crop
from onestep.sr.data.images import IMAGE_SUFFIXES, ImageReadError, list_images, load_image

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "bicubic_downsample",
    "list_images",
    "load_image",
    "modcrop",
    "random_crop",
]
