"""Reading image files as RGB tensors, with one documented conversion per unusual format.

SR folders hold whatever people photograph and save: 8-bit RGB JPEGs, but also grayscale scans,
PNGs with alpha, 16-bit TIFF/PNG from raw converters, palette GIF-like PNGs, CMYK JPEGs. Every
reader of this package goes through :func:`load_image`, which returns ``[3, H, W]`` float32 in
[0, 1] and converts as follows (the conversions are the ones BasicSR-style pipelines apply
implicitly through ``cv2.imread(..., IMREAD_COLOR)``, written out here):

* grayscale (``L``, ``1``, 16/32-bit ``I;16`` / ``I`` / ``F``): replicated to three channels;
  16-bit values are divided by 65535, 32-bit integers by their own maximum bit depth guess
  (65535 if every value fits, else 2^32 - 1), float (``F``) is clipped to [0, 1];
* alpha (``RGBA``, ``LA``, palette with transparency): composited on **white** (a transparent
  background reads as paper, not as black ink);
* palette (``P``), ``CMYK``, ``YCbCr``, ``HSV`` and the rest: PIL's conversion to ``RGB``.

A file PIL cannot identify, or one cut short (truncated JPEG/PNG), raises :class:`ImageReadError`
naming the path, in the main process, before any worker sees it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "list_images", "load_image"]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """An image file that cannot be read; the message names the file and the reason."""


def list_images(folder: str | Path, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files directly in ``folder`` and its subfolders, sorted (case-insensitive suffix).

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a directory.
        ValueError: it holds no file with one of ``suffixes``.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    allowed = {s.lower() for s in suffixes}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in allowed)
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(allowed))}) found under {root}")
    return files


def _white_composite(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_gray(img: Image.Image) -> np.ndarray:
    """``[H, W]`` float in [0, 1] from a 16/32-bit integer or float grayscale image."""
    arr = np.asarray(img)
    if img.mode == "F":
        return np.clip(arr.astype(np.float32), 0.0, 1.0)
    arr = arr.astype(np.float64)
    peak = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) <= 65535 else 2.0**32 - 1
    return (np.clip(arr, 0, peak) / peak).astype(np.float32)


def _to_array(img: Image.Image) -> np.ndarray:
    """``[H, W, 3]`` float32 in [0, 1] following the module's conversion rules."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        gray = _high_depth_gray(img)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    rgb = _white_composite(img) if has_alpha else img.convert("RGB")
    return np.asarray(rgb, dtype=np.float32) / 255.0


def load_image(path: str | Path) -> Tensor:
    """Read ``path`` as a ``[3, H, W]`` float32 tensor in [0, 1] (see the module's rules).

    Raises:
        FileNotFoundError: no such file.
        ImageReadError: not an image PIL can decode, or a truncated / corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated files fail here, not later in a worker
            arr = _to_array(img)
    except UnidentifiedImageError as err:
        raise ImageReadError(f"{path}: not an image file PIL can identify") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: cannot decode the image ({err})") from err
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
