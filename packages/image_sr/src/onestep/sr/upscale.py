"""Upscaling whole images with any :class:`~onestep.sr.resolver.SuperResolver`: pads, tiles, files.

Large images do not fit a diffusion UNet in one pass, so :func:`upscale` can cut the LR image
into overlapping tiles, super-resolve each and cross-fade the outputs. Tile size and overlap are
given in **output (HR) pixels**, as on the command line (``onestep-sr upscale --tile 512
--overlap 32``), and must be multiples of the scale so that each tile maps to whole LR pixels.

Blending. A tile's pixels near its border see padding instead of the neighbouring image, so
they are wrong by however far the network looks (its receptive field). In each overlap of width
``overlap`` the weight of a tile is zero over the outer quarter (next to its cut edge), rises as a
raised cosine over the middle half and is one over the inner quarter; weights are normalised to
sum to one at every pixel. Hence:

* a network whose receptive field reaches at most ``overlap / 4`` output pixels from the output
  pixel (a receptive field narrower than ``overlap / 2``) gives **the same result** tiled as
  untiled, up to float rounding;
* a deeper network's tile-edge errors are faded out over the middle half of the overlap, with no
  hard seam.

Sides on the image border get no ramp: there the tile sees the same border as the untiled run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from onestep.sr.colorfix import COLOR_FIXES
from onestep.sr.data.images import list_images, load_image
from onestep.sr.resolver import SuperResolver, check_lr, upsample

__all__ = ["save_png", "tile_starts", "upscale", "upscale_files"]


def _pad_to_multiple(lr: Tensor, multiple: int) -> Tensor:
    """Pad bottom/right to a multiple of ``multiple``: reflect, or replicate where too short."""
    h, w = lr.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return lr
    # Reflect padding needs pad < side; a side shorter than its pad repeats its edge instead.
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(lr, (0, pad_w, 0, pad_h), mode=mode)


def _run_once(resolver: SuperResolver, lr: Tensor) -> Tensor:
    """One resolver call on ``lr`` padded to ``resolver.multiple``, cropped; ``[B, 3, sh, sw]``."""
    s = resolver.scale
    h, w = lr.shape[-2:]
    padded = _pad_to_multiple(lr, resolver.multiple)
    sr = resolver(padded)
    expected = (padded.shape[0], 3, padded.shape[2] * s, padded.shape[3] * s)
    if tuple(sr.shape) != expected:
        raise ValueError(
            f"{type(resolver).__name__} returned {tuple(sr.shape)} for an LR input of "
            f"{tuple(padded.shape)}; expected {expected} (scale={s}); check its scale attribute"
        )
    return sr[..., : h * s, : w * s]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with >= ``overlap`` overlap.

    Tiles step by ``tile - overlap``; the last one is shifted back to end on the border, so it may
    overlap its neighbour by more. A side no longer than ``tile`` is one tile.
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    return [*range(0, length - tile, stride), length - tile]


def _ramp(overlap: int, device: torch.device) -> Tensor:
    """Weights ``[overlap]`` from the cut edge: 0 (outer quarter), cosine, 1 (inner quarter)."""
    quarter = overlap // 4
    rise = overlap - 2 * quarter
    ramp = torch.ones(overlap, device=device)
    ramp[:quarter] = 0.0
    i = torch.arange(rise, device=device, dtype=torch.float32)
    ramp[quarter : quarter + rise] = 0.5 - 0.5 * torch.cos(math.pi * (i + 0.5) / rise)
    return ramp


def _axis_weight(start: int, size: int, length: int, overlap: int, device: torch.device) -> Tensor:
    """1-D blend weight ``[size]`` of a tile at ``start`` on an axis of ``length`` (HR pixels)."""
    weight = torch.ones(size, device=device)
    n = min(overlap, size)
    if n == 0:
        return weight
    ramp = _ramp(overlap, device)[:n]
    if start > 0:  # a cut edge on the low side, not the image border
        weight[:n] = torch.minimum(weight[:n], ramp)
    if start + size < length:
        weight[-n:] = torch.minimum(weight[-n:], ramp.flip(0))
    return weight


def _run_tiled(
    resolver: SuperResolver, lr: Tensor, tile_lr: int, overlap_lr: int, progress: bool
) -> Tensor:
    """Tiles of ``tile_lr`` LR pixels overlapping by ``overlap_lr``, blended; ``[B, 3, sh, sw]``."""
    s = resolver.scale
    b, _, h, w = lr.shape
    out = torch.zeros(b, 3, h * s, w * s, dtype=lr.dtype, device=lr.device)
    total = torch.zeros(1, 1, h * s, w * s, dtype=lr.dtype, device=lr.device)
    boxes = [
        (y, x)
        for y in tile_starts(h, tile_lr, overlap_lr)
        for x in tile_starts(w, tile_lr, overlap_lr)
    ]
    for y, x in tqdm(boxes, desc="tiles", disable=not progress, leave=False):
        th, tw = min(tile_lr, h), min(tile_lr, w)
        sr = _run_once(resolver, lr[..., y : y + th, x : x + tw])  # (B, 3, th*s, tw*s)
        wy = _axis_weight(y * s, th * s, h * s, overlap_lr * s, lr.device)
        wx = _axis_weight(x * s, tw * s, w * s, overlap_lr * s, lr.device)
        weight = (wy[:, None] * wx[None, :]).to(lr.dtype)  # (th*s, tw*s)
        out[..., y * s : (y + th) * s, x * s : (x + tw) * s] += weight * sr
        total[..., y * s : (y + th) * s, x * s : (x + tw) * s] += weight
    return out / total


def _check_tiling(tile: int, overlap: int, scale: int) -> None:
    for name, value in (("tile", tile), ("overlap", overlap)):
        if value % scale != 0:
            raise ValueError(
                f"{name}={value} output pixels is not a multiple of the scale {scale}; "
                f"use {name}={max(scale, value // scale * scale)} "
                "(tiles must cover whole LR pixels)"
            )
    if tile <= 0 or overlap < 0:
        raise ValueError(f"need tile > 0 and overlap >= 0, got tile={tile}, overlap={overlap}")
    if overlap >= tile:
        raise ValueError(
            f"overlap={overlap} must be smaller than tile={tile} (both in output pixels); "
            f"e.g. overlap={tile // 8 // scale * scale}"
        )


def upscale(
    resolver: SuperResolver,
    lr: Tensor,
    *,
    tile: int | None = None,
    overlap: int = 32,
    color_fix: str | None = None,
    progress: bool = False,
) -> Tensor:
    """Super-resolve a batch of any size, in one call or in blended tiles.

    The resolver is called under ``torch.no_grad()`` in whatever train/eval mode it is in (put it
    in eval mode first: batch statistics would differ between tiles).

    Args:
        resolver: any :class:`SuperResolver`; its LR input is padded to ``resolver.multiple``.
        lr: ``[B, 3, h, w]`` in [0, 1], on the resolver's device.
        tile: tile side in **output** pixels (a multiple of ``resolver.scale``); ``None`` runs the
            whole image at once.
        overlap: overlap between neighbouring tiles in **output** pixels, a multiple of the scale
            and smaller than ``tile``; the module docstring says how it is blended.
        color_fix: ``"wavelet"`` or ``"adain"`` (:mod:`onestep.sr.colorfix`) against the bicubic
            upsampled ``lr``, or ``None``.
        progress: show a tqdm bar over tiles.

    Returns:
        ``[B, 3, h * scale, w * scale]``; clamped to [0, 1] after a colour fix.
    """
    check_lr(lr)
    if color_fix is not None and color_fix not in COLOR_FIXES:
        raise ValueError(f"unknown color_fix {color_fix!r}; choose one of {sorted(COLOR_FIXES)}")
    s = resolver.scale
    with torch.no_grad():
        if tile is None:
            sr = _run_once(resolver, lr)
        else:
            _check_tiling(tile, overlap, s)
            sr = _run_tiled(resolver, lr, tile // s, overlap // s, progress)
        if color_fix is not None:
            sr = COLOR_FIXES[color_fix](sr, upsample(lr, s)).clamp(0.0, 1.0)
    return sr


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write ``[3, H, W]`` in [0, 1] as an 8-bit RGB PNG (clamped, rounded); returns the path."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image [3, H, W], got shape {tuple(image.shape)}")
    arr = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    path = Path(path)
    Image.fromarray(np.ascontiguousarray(arr.permute(1, 2, 0).cpu().numpy())).save(path)
    return path


def _expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(list_images(item))
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"input {item} is neither an image file nor a folder")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise ValueError(
                f"{stems[f.stem]} and {f} would both be written as {f.stem}.png; "
                "upscale them into different output folders"
            )
        stems[f.stem] = f
    return files


def upscale_files(
    resolver: SuperResolver,
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    tile: int | None = None,
    overlap: int = 32,
    color_fix: str | None = None,
    progress: bool = False,
) -> list[Path]:
    """Upscale image files and folders into ``output/<stem>.png`` (8-bit RGB).

    Args:
        resolver: any :class:`SuperResolver`; images are moved to the device of its first
            parameter (CPU if it has none).
        inputs: image files and/or folders (expanded with :func:`~onestep.sr.data.list_images`,
            recursively); files are read with :func:`~onestep.sr.data.load_image`.
        output: folder for the results, created if missing.
        tile: see :func:`upscale`.
        overlap: see :func:`upscale`.
        color_fix: see :func:`upscale`.
        progress: a tqdm bar over files (and one over each image's tiles).

    Returns:
        The written paths, in input order.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: two inputs share a file stem (they would overwrite each other).
    """
    files = _expand_inputs(inputs)
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    param = next(resolver.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    written = []
    for f in tqdm(files, desc="images", disable=not progress):
        lr = load_image(f).unsqueeze(0).to(device)
        sr = upscale(
            resolver, lr, tile=tile, overlap=overlap, color_fix=color_fix, progress=progress
        )
        written.append(save_png(sr[0], out_dir / f"{f.stem}.png"))
    return written
