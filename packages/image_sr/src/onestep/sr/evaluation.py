"""Scoring super-resolvers: metrics and latency per image, a table and image strips.

:func:`evaluate_resolvers` scores any :class:`~onestep.sr.resolver.SuperResolver` s on
``(name, lr, hr)`` pairs (the demo and the benchmark use it). :class:`SREvaluation` does the same
inside Lightning for any module with ``resolver()`` and ``scale``: ``onestep-sr test`` scores the
module's resolver next to bicubic, ``onestep-sr predict`` upscales the images of
:class:`PredictImages`.

Conventions. PSNR / SSIM on the BT.601 Y channel with ``crop_border = scale`` and NIQE on the SR
image (:class:`~onestep.sr.metrics.MetricSuite`). Every resolver runs through
:func:`~onestep.sr.upscale.upscale` (so any image size works: it pads to ``multiple``). Latency is
``time.perf_counter`` around that call, one image at a time, under ``torch.no_grad``, after one
untimed warm-up call per resolver (first-call costs: allocator, kernel selection), with the CUDA
queue drained before the clock stops; it is reported in seconds per image.

Files written into the output folder: ``metrics.csv`` / ``metrics.md``, one row per image and a
``mean`` row, one column per (metric, method) pair such as ``psnr bicubic`` (so each column's
mean is that method's mean; :func:`~onestep.sr.report.write_table`), and ``strip_<image>.png``
for the first images: each resolver's output side by side, then the HR image.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from onestep.sr.data.images import list_images, load_image
from onestep.sr.metrics import MetricSuite
from onestep.sr.report import image_strip, write_table
from onestep.sr.resolver import Bicubic, SuperResolver
from onestep.sr.upscale import save_png, upscale

__all__ = [
    "BICUBIC",
    "PredictImages",
    "ResolverScorer",
    "SREvaluation",
    "evaluate_resolvers",
    "mean_by_method",
    "required_parameters",
    "slug",
    "timed_upscale",
    "wide_rows",
]

BICUBIC = "bicubic"
"""The method name of the bicubic baseline in every table."""

Row = dict[str, Any]  # "name", "method": str; metrics, "latency_s", "images": numbers


def slug(text: str) -> str:
    """``"teacher 50-step"`` -> ``"teacher_50_step"``: safe in file names and log keys."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def _device_of(resolver: SuperResolver, fallback: torch.device) -> torch.device:
    param = next(resolver.parameters(), None)
    return param.device if param is not None else fallback


def timed_upscale(
    resolver: SuperResolver, lr: Tensor, tile: int | None = None
) -> tuple[Tensor, float]:
    """``(upscale(resolver, lr), seconds)``, the clock stopped after the device has finished."""
    sync = torch.cuda.synchronize if lr.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    with torch.no_grad():
        sr = upscale(resolver, lr, tile=tile)
    sync()
    return sr, time.perf_counter() - start


def _batched(image: Tensor, what: str, name: str) -> Tensor:
    """``[3, H, W]`` or ``[1, 3, H, W]`` -> ``[1, 3, H, W]``."""
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(
            f"{what} of image {name!r} must be [3, H, W] or [1, 3, H, W], got {tuple(image.shape)}"
        )
    return image


class ResolverScorer:
    """Scores several resolvers image by image; :meth:`finish` writes the table.

    Args:
        resolvers: method name -> resolver, all with the same ``scale``; table columns and strip
            panels follow this order.
        out_dir: where the table and the strips go (created when first written).
        metrics: :data:`~onestep.sr.metrics.KNOWN_METRICS` names.
        strip_first: write a strip for the first this many images.
        tile: tile side for :func:`~onestep.sr.upscale.upscale` (``None``: whole images).
        weights_dir: local weights of learned metrics (see :class:`MetricSuite`).

    Raises:
        ValueError: no resolvers, or resolvers of different scales.
    """

    def __init__(
        self,
        resolvers: Mapping[str, SuperResolver],
        out_dir: str | Path,
        metrics: Sequence[str] = ("psnr", "ssim", "niqe"),
        strip_first: int = 2,
        tile: int | None = None,
        weights_dir: str | Path | None = None,
    ) -> None:
        if not resolvers:
            raise ValueError("no resolvers to evaluate; pass at least one")
        scales = {name: int(r.scale) for name, r in resolvers.items()}
        if len(set(scales.values())) != 1:
            raise ValueError(f"resolvers must share one scale to be compared, got {scales}")
        self.resolvers = dict(resolvers)
        self.scale = next(iter(scales.values()))
        self.out_dir = Path(out_dir)
        self.suite = MetricSuite(metrics, crop_border=self.scale, weights_dir=weights_dir)
        self.strip_first, self.tile = strip_first, tile
        self.rows: list[Row] = []
        self.strips: list[Path] = []
        self._warm: set[str] = set()

    def add(self, name: str, lr: Tensor, hr: Tensor) -> list[Row]:
        """Score every resolver on one image; returns (and keeps) one row per method.

        Args:
            name: the image's name (table rows, strip file name).
            lr: ``[3, h, w]`` or ``[1, 3, h, w]`` in [0, 1].
            hr: the ground truth, ``h * scale`` by ``w * scale``.
        """
        lr, hr = _batched(lr, "lr", name), _batched(hr, "hr", name)
        rows, panels = [], {}
        for method, resolver in self.resolvers.items():
            x = lr.to(_device_of(resolver, lr.device))
            if method not in self._warm:
                timed_upscale(resolver, x, self.tile)
                self._warm.add(method)
            sr, seconds = timed_upscale(resolver, x, self.tile)
            scores = self.suite(sr.float().cpu(), hr.float().cpu())
            rows.append(
                {
                    "name": name,
                    "method": method,
                    **{k: float(v[0]) for k, v in scores.items()},
                    "latency_s": seconds,
                }
            )
            panels[method] = sr[0].float().cpu()
        if len(self.strips) < self.strip_first:
            path = self.out_dir / f"strip_{slug(name)}.png"
            self.strips.append(image_strip({**panels, "HR": hr[0].float().cpu()}, path))
        self.rows.extend(rows)
        return rows

    def finish(self, rows: Sequence[Row] | None = None) -> tuple[list[Row], dict[str, Row]]:
        """Write ``metrics.csv`` / ``metrics.md``; returns ``(rows, mean_by_method)``.

        Args:
            rows: the rows to write (default: those :meth:`add` returned; pass the rows gathered
                from every process under DDP).
        """
        rows = list(self.rows if rows is None else rows)
        if not rows:
            raise ValueError("no image was scored; call add() with at least one (lr, hr) pair")
        write_table(wide_rows(rows, list(self.resolvers)), self.out_dir, "metrics")
        return rows, mean_by_method(rows)


def _metric_keys(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(k for row in rows for k in row if k not in ("name", "method")))


def wide_rows(rows: Sequence[Row], methods: Sequence[str]) -> list[Row]:
    """One row per image with a ``"<metric> <method>"`` column per pair, metrics grouped."""
    keys = _metric_keys(rows)
    by_image: dict[str, Row] = {}
    for row in rows:
        wide = by_image.setdefault(str(row["name"]), {"name": row["name"]})
        for key in keys:
            if key in row:
                wide[f"{key} {row['method']}"] = row[key]
    order = ["name", *(f"{k} {m}" for k in keys for m in methods)]
    return [{c: w[c] for c in order if c in w} for w in by_image.values()]


def mean_by_method(rows: Sequence[Row]) -> dict[str, Row]:
    """Method -> mean of each metric over the images that have it (and ``images``: the count)."""
    means: dict[str, Row] = {}
    for method in dict.fromkeys(str(r["method"]) for r in rows):
        mine = [r for r in rows if r["method"] == method]
        mean: Row = {"images": len(mine)}
        for key in _metric_keys(mine):
            values = [float(r[key]) for r in mine if key in r]
            mean[key] = sum(values) / len(values)
        means[method] = mean
    return means


def evaluate_resolvers(
    resolvers: Mapping[str, SuperResolver],
    pairs: Iterable[tuple[str, Tensor, Tensor]],
    out_dir: str | Path,
    metrics: Sequence[str] = ("psnr", "ssim", "niqe"),
    strip_first: int = 2,
    *,
    tile: int | None = None,
    weights_dir: str | Path | None = None,
) -> tuple[list[Row], dict[str, Row]]:
    """Score resolvers on ``(name, lr, hr)`` pairs; write the table and the strips to ``out_dir``.

    Args:
        resolvers: method name -> resolver (same scale); e.g. ``{"bicubic": Bicubic(4),
            "student 1-step": module.resolver()}``. Put them in eval mode first.
        pairs: ``(name, lr [1, 3, h, w], hr [1, 3, h * scale, w * scale])`` in [0, 1].
        out_dir: output folder (see the module docstring for its files).
        metrics: metric names; PSNR / SSIM crop ``scale`` border pixels.
        strip_first: strips for the first this many images (strip columns: the resolvers in
            order, then ``HR``).
        tile: run resolvers in tiles of this many output pixels (``None``: whole images).
        weights_dir: local weights of learned metrics (``lpips`` etc.).

    Returns:
        ``(rows, mean_by_method)``: ``rows`` one dict per (image, method) with ``name``,
        ``method``, the metrics and ``latency_s`` (seconds per image); ``mean_by_method`` maps a
        method to the means of those numbers and ``images``, the number of images.
    """
    scorer = ResolverScorer(resolvers, out_dir, metrics, strip_first, tile, weights_dir)
    for name, lr, hr in pairs:
        scorer.add(name, lr, hr)
    return scorer.finish()


def required_parameters(fn: Any) -> list[str]:
    """Names of ``fn``'s parameters without a default (``SRTeacher.resolver``: ``["steps"]``)."""
    params = inspect.signature(fn).parameters.values()
    return [p.name for p in params if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD]


def _gather(rows: list[Row]) -> list[Row]:
    """Every process's rows, in rank order (the rows themselves without DDP)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return rows
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, rows)
    return [row for part in parts for row in part]


class SREvaluation(L.LightningModule):
    """``test`` and ``predict`` for any SR LightningModule with ``resolver()`` and ``scale``.

    Mix in first: ``class MyMethod(SREvaluation, L.LightningModule)``.

    * ``test_step`` scores each test image with bicubic and the module's resolver (a resolver
      that needs ``steps``, the teacher's sampler, once per step count in the ``val_steps``
      hyperparameter); ``on_test_epoch_end`` writes ``metrics.csv`` / ``metrics.md`` and
      ``strip_*.png`` (bicubic | model | HR) to ``<trainer.log_dir>/test`` and logs
      ``test/<metric>/<method>`` means.
    * ``predict_step`` returns the SR batch ``[B, 3, sh, sw]`` and writes ``<name>.png`` files
      into :attr:`predict_dir`, or else into the ``output`` of the datamodule
      (:class:`PredictImages`), when either is set. It runs the last of :meth:`model_resolvers`
      (the teacher: at the last of ``val_steps``).

    Attributes:
        eval_metrics: metrics of the test table.
        eval_strips: number of test images that get a strip.
        eval_weights_dir: local weights folder of learned metrics.
        predict_dir: folder for predicted PNGs (``None``: the datamodule's ``output``, if any).
    """

    scale: int
    eval_metrics: tuple[str, ...] = ("psnr", "ssim", "niqe")
    eval_strips: int = 2
    eval_weights_dir: str | None = None
    predict_dir: str | None = None

    def model_resolvers(self) -> dict[str, SuperResolver]:
        """Method name -> the module's resolver(s), e.g. ``{"OSEDiffVSD 1-step": ...}``."""
        resolver = getattr(self, "resolver", None)
        if resolver is None:
            raise TypeError(f"{type(self).__name__} has no resolver() method to evaluate")
        label = type(self).__name__
        if required_parameters(resolver):
            steps = tuple(self.hparams.get("val_steps", (1,)))
            return {f"{label} {n}-step": resolver(n) for n in steps}
        return {f"{label} 1-step": resolver()}

    def test_dir(self) -> Path:
        """``<trainer.log_dir or default_root_dir>/test``."""
        trainer = self.trainer
        return Path(trainer.log_dir or trainer.default_root_dir) / "test"

    def on_test_epoch_start(self) -> None:
        """A fresh scorer for bicubic and the model."""
        resolvers = {BICUBIC: Bicubic(self.scale), **self.model_resolvers()}
        self.sr_scorer = ResolverScorer(
            resolvers,
            self.test_dir(),
            self.eval_metrics,
            self.eval_strips,
            weights_dir=self.eval_weights_dir,
        )

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Score each image of a ``{"lr", "hr", "name"}`` batch (one row per method)."""
        names = batch.get("name") or [f"{batch_idx:05d}_{i}" for i in range(len(batch["lr"]))]
        for i, name in enumerate(names):
            self.sr_scorer.add(str(name), batch["lr"][i], batch["hr"][i])

    def on_test_epoch_end(self) -> None:
        """Write the table (rank zero) and log each method's means."""
        rows = _gather(self.sr_scorer.rows)
        if not rows:
            return
        if self.trainer.is_global_zero:
            self.sr_scorer.finish(rows)
        logs = {
            f"test/{key}/{slug(method)}": float(value)
            for method, mean in mean_by_method(rows).items()
            for key, value in mean.items()
            if key != "images"
        }
        self.log_dict(logs, sync_dist=False)

    def _predict_dir(self) -> Path | None:
        if self.predict_dir is not None:
            return Path(self.predict_dir)
        output = getattr(self.trainer.datamodule, "output", None)  # pyright: ignore[reportAttributeAccessIssue]
        return Path(output) if output is not None else None

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """SR images ``[B, 3, sh, sw]`` of a ``{"lr", "name"}`` batch (or an LR tensor)."""
        lr = batch["lr"] if isinstance(batch, Mapping) else batch
        resolver = list(self.model_resolvers().values())[-1]
        sr = upscale(resolver, lr)
        out = self._predict_dir()
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            names = batch.get("name") if isinstance(batch, Mapping) else None
            names = names or [f"{batch_idx:05d}_{i}" for i in range(len(sr))]
            for image, name in zip(sr, names, strict=True):
                save_png(image, out / f"{name}.png")
        return sr


class _ImageFiles(Dataset):
    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"lr": load_image(self.files[i]), "name": self.files[i].stem}


class PredictImages(L.LightningDataModule):
    """LR images for ``onestep-sr predict``: files and folders in, ``{"lr", "name"}`` batches out.

    Batches hold one image (sizes differ). The SR images go to ``output/<stem>.png``
    (:meth:`SREvaluation.predict_step` reads :attr:`output`).
    """

    def __init__(self, inputs: list[str], output: str | None = None, num_workers: int = 0):
        """Find the images now (an unknown path fails at once).

        Args:
            inputs: image files and/or folders (searched recursively).
            output: folder for the SR PNGs; ``None``: only return them.
            num_workers: DataLoader worker processes.

        Raises:
            FileNotFoundError: an input does not exist.
            ValueError: two inputs share a file stem (their outputs would collide).
        """
        super().__init__()
        files: list[Path] = []
        for item in map(Path, inputs):
            if item.is_dir():
                files.extend(list_images(item))
            elif item.is_file():
                files.append(item)
            else:
                raise FileNotFoundError(f"predict input {item} is neither an image nor a folder")
        stems = [f.stem for f in files]
        clashes = sorted({s for s in stems if stems.count(s) > 1})
        if clashes:
            raise ValueError(
                f"inputs share the file stem(s) {clashes}; their outputs would overwrite each "
                "other: predict them into different output folders"
            )
        self.files, self.output, self.num_workers = files, output, num_workers

    def predict_dataloader(self) -> DataLoader:
        """One image per batch, in input order."""
        return DataLoader(_ImageFiles(self.files), batch_size=1, num_workers=self.num_workers)
