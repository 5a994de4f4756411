"""Results of an SR evaluation as files: a per-image metrics table and side-by-side image strips."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = ["image_strip", "write_table"]

Cell = float | int | str


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _columns(rows: Sequence[Mapping[str, Cell]]) -> list[str]:
    """Every key of every row, in first-seen order."""
    return list(dict.fromkeys(key for row in rows for key in row))


def _mean_row(rows: Sequence[Mapping[str, Cell]], columns: list[str]) -> dict[str, Cell]:
    """Numeric columns averaged over the rows that have them; "mean" in the first text column."""
    mean: dict[str, Cell] = {}
    label_done = False
    for col in columns:
        values = [row[col] for row in rows if col in row]
        if values and all(_is_number(v) for v in values):
            mean[col] = float(np.mean([float(v) for v in values]))
        elif not label_done:
            mean[col], label_done = "mean", True
        else:
            mean[col] = ""
    return mean


def _format(value: Cell | None, decimals: int) -> str:
    if value is None or value == "":
        return ""
    if _is_number(value):
        return "nan" if math.isnan(float(value)) else f"{float(value):.{decimals}f}"
    return str(value)


def write_table(
    rows: Sequence[Mapping[str, Cell]],
    out_dir: str | Path,
    name: str = "metrics",
    decimals: int = 4,
) -> tuple[Path, Path]:
    """Write per-image rows plus a final ``mean`` row as ``<name>.csv`` and ``<name>.md``.

    Columns are the keys of all rows in first-seen order; a row without a key (a metric skipped
    for that image) leaves the cell empty, and the mean of a column is over the rows that have it.
    The mean row carries ``"mean"`` in the first non-numeric column (e.g. the image name).

    Args:
        rows: one mapping per image, e.g. ``{"image": "0801.png", "psnr": 24.1, "ssim": 0.71}``.
        out_dir: folder for the two files, created if missing.
        name: file stem.
        decimals: digits after the point in the markdown table (the CSV keeps full precision).

    Returns:
        ``(csv_path, md_path)``.
    """
    if not rows:
        raise ValueError("write_table got no rows; evaluate at least one image first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = _columns(rows)
    table = [*[dict(row) for row in rows], _mean_row(rows, columns)]

    csv_path = out / f"{name}.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(table)

    numeric = {c: all(_is_number(r[c]) for r in rows if c in r) for c in columns}
    cells = [[_format(row.get(c), decimals) for c in columns] for row in table]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        padded = [
            v.rjust(w) if numeric[c] else v.ljust(w)
            for v, w, c in zip(values, widths, columns, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        ("-" * (w - 1) + ":") if numeric[c] else "-" * w
        for w, c in zip(widths, columns, strict=True)
    ]
    md = [line(columns), "| " + " | ".join(rule) + " |", *(line(c) for c in cells)]
    md_path = out / f"{name}.md"
    md_path.write_text("\n".join(md) + "\n")
    return csv_path, md_path


def _to_pil(image: Tensor, label: str) -> Image.Image:
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image {label!r}: expected [3, H, W], got shape {tuple(image.shape)}")
    arr = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(np.ascontiguousarray(arr.permute(1, 2, 0).cpu().numpy()))


def image_strip(columns: Mapping[str, Tensor], path: str | Path, gap: int = 4) -> Path:
    """Save images side by side, each under a text label, as one PNG.

    Images lower than the tallest are enlarged to its height with nearest-neighbour resampling
    (a small LR input then shows its real pixels, nothing invented); aspect ratios are kept.

    Args:
        columns: label -> ``[3, H, W]`` in [0, 1], in display order, e.g. ``{"LR bicubic": ...,
            "teacher 50-step": ..., "student 1-step": ..., "HR": ...}``.
        path: the PNG to write (parent folders are created).
        gap: white pixels between images.

    Returns:
        ``path``. The PNG is ``sum(widths) + gap * (n - 1)`` wide and ``label band + H`` tall.
    """
    if not columns:
        raise ValueError("image_strip needs at least one image")
    panels = [_to_pil(img, label) for label, img in columns.items()]
    height = max(p.height for p in panels)
    panels = [
        p
        if p.height == height
        else p.resize((round(p.width * height / p.height), height), Image.Resampling.NEAREST)
        for p in panels
    ]
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = max(probe.textbbox((0, 0), label, font=font)[3] for label in columns)
    band = math.ceil(text_h) + 8
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, band + height), "white")
    x = 0
    for label, panel in zip(columns, panels, strict=True):
        header = Image.new("RGB", (panel.width, band), "white")  # clips labels wider than the image
        ImageDraw.Draw(header).text((4, 4), label, fill="black", font=font)
        canvas.paste(header, (x, 0))
        canvas.paste(panel, (x, band))
        x += panel.width + gap
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
