"""Evaluate the demo: Frechet distance in classifier features, side-by-side latency, outputs.

Every generator row draws from the same fixed latent batch; FD is measured against the training
split's features; latencies of all generators are measured in one process, interleaved, after a
warm-up, as the median of repeats under the same ``torch.set_num_threads``.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from onestep.core.demo.dmd2 import generate
from onestep.core.denoiser import Denoiser
from onestep.core.metrics import frechet_distance
from onestep.core.sampling import nfe, sample

__all__ = [
    "Generator",
    "Row",
    "generators",
    "median_latency_ms",
    "save_grid",
    "write_metrics",
]


@dataclass
class Row:
    """One line of the metrics table; ``latency_ms`` / ``speedup`` are None for real data."""

    method: str
    nfe: int
    fd: float
    latency_ms: float | None = None
    speedup: float | None = None


@dataclass
class Generator:
    """A named way to turn latents ``[B, C, S, S]`` into samples, with its network evaluations."""

    name: str
    nfe: int
    fn: Callable[[Tensor], Tensor]


def generators(
    teacher: Denoiser, student: Denoiser, solver: str, teacher_steps: Sequence[int] = (50, 4, 1)
) -> list[Generator]:
    """Teacher ODE solves (``solver`` for > 1 step, one DDIM/Euler step for 1) and the student."""
    rows = []
    for steps in teacher_steps:
        s = solver if steps > 1 else "euler"
        rows.append(
            Generator(
                f"teacher {steps}-step ({s})",
                nfe(s, steps),
                lambda z, steps=steps, s=s: sample(teacher, z, steps, solver=s),
            )
        )
    rows.append(Generator("student 1-step (DMD2)", 1, lambda z: generate(student, z)))
    return rows


def _timed(fn: Callable[[], object], inner: int) -> float:
    """Seconds per call of ``fn``, averaged over ``inner`` back-to-back calls."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / inner


@torch.no_grad()
def median_latency_ms(
    fns: Sequence[Callable[[], object]], repeats: int, min_round_s: float = 0.02
) -> list[float]:
    """Median wall time (ms) per call of each of ``fns``, measured interleaved round by round.

    A warm-up call also sizes each round: a fast call is repeated back to back until the round
    lasts about ``min_round_s``, so timer noise does not swamp a one-step generator. Interleaving
    makes a background load hit every candidate alike, so ratios stay fair.
    """
    warm = [_timed(fn, 1) for fn in fns]
    inner = [max(1, math.ceil(min_round_s / max(w, 1e-6))) for w in warm]
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            times[i].append(_timed(fn, inner[i]) * 1e3)
    return [statistics.median(t) for t in times]


def fd(features: Callable[[Tensor], Tensor], x: Tensor, ref_features: Tensor) -> float:
    """Frechet distance of ``x``'s features to ``ref_features`` (samples clamped to [-1, 1])."""
    return frechet_distance(features(x.clamp(-1, 1)), ref_features)


def _tile(images: Tensor, cols: int, scale: int) -> Image.Image:
    """``[N, 1, S, S]`` in [-1, 1] -> a grayscale grid, each digit upscaled by nearest neighbour.

    Digits sit on a mid-grey lattice one pixel wide, so neighbours with dark borders stay apart.
    """
    n, _, s, _ = images.shape
    rows, cell = -(-n // cols), s + 1
    grid = torch.zeros((rows * cell + 1, cols * cell + 1))  # 0 = mid-grey in [-1, 1]
    for i in range(n):
        r, c = divmod(i, cols)
        grid[1 + r * cell : 1 + r * cell + s, 1 + c * cell : 1 + c * cell + s] = images[i, 0]
    pixels = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    img = Image.fromarray(pixels, mode="L")
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def save_grid(
    path: Path, panels: Sequence[tuple[str, Tensor]], cols: int = 8, scale: int = 4
) -> None:
    """Save labelled panels side by side: one title and a ``cols``-wide digit grid per panel."""
    tiles = [(title, _tile(images.detach().cpu().float(), cols, scale)) for title, images in panels]
    pad, title_h = 8, 18
    width = sum(t.width for _, t in tiles) + pad * (len(tiles) + 1)
    height = max(t.height for _, t in tiles) + title_h + 2 * pad
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    x = pad
    for title, tile in tiles:
        draw.text((x, pad // 2), title, fill=0)
        canvas.paste(tile, (x, pad + title_h))
        x += tile.width + pad
    canvas.save(path)


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown_table(rows: Sequence[Row]) -> str:
    """The metrics as a markdown table."""
    lines = [
        "| method | NFE | FD | latency ms | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.nfe} | {r.fd:.2f} | {_fmt(r.latency_ms, '.2f')} "
            f"| {_fmt(r.speedup, '.1f')}{'' if r.speedup is None else 'x'} |"
        )
    return "\n".join(lines)


def write_metrics(out: Path, rows: Sequence[Row], meta: dict, notes: Sequence[str]) -> str:
    """Write ``metrics.md`` and ``metrics.json`` into ``out``; returns the markdown table."""
    table = markdown_table(rows)
    (out / "metrics.md").write_text(
        "# onestep demo: DMD2 on sklearn digits\n\n" + table + "\n\n" + "\n".join(notes) + "\n"
    )
    payload = {"rows": [asdict(r) for r in rows], **meta}
    (out / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
    return table
