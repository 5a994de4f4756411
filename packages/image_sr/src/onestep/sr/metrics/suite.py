"""One object that scores SR outputs with the metrics of an SR results table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from onestep.sr.metrics.fidelity import MetricSkippedError, build_psnr_ssim, niqe
from onestep.sr.metrics.learned import LEARNED_WEIGHTS, MissingWeightsError, build_learned

__all__ = ["FULL_REFERENCE", "KNOWN_METRICS", "LOWER_BETTER", "MetricSuite"]

LOWER_BETTER: dict[str, bool] = {
    "psnr": False,
    "ssim": False,
    "niqe": True,
    "lpips": True,
    "dists": True,
    "musiq": False,
    "clipiqa": False,
    "maniqa": False,
}
"""Whether a lower score is better, per metric (agrees with pyiqa's ``lower_better``)."""

KNOWN_METRICS: tuple[str, ...] = tuple(LOWER_BETTER)
FULL_REFERENCE: frozenset[str] = frozenset({"psnr", "ssim", "lpips", "dists"})
"""Metrics that compare with the HR image; the others score the SR image alone."""

_RANGE_TOL = 1e-6


def _check_images(x: Tensor, what: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected {what} as [B, 3, H, W], got shape {tuple(x.shape)}")
    lo, hi = float(x.min()), float(x.max())
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise ValueError(
            f"{what} has values in [{lo:.4f}, {hi:.4f}], outside [0, 1]; clamp it "
            "(x.clamp(0, 1)) as saving to an image file would"
        )


class MetricSuite:
    """Scores a batch of SR images, optionally against HR, with the requested metrics.

    * ``psnr`` and ``ssim``: pyiqa on the BT.601 Y channel after removing ``crop_border`` pixels
      on each side (see :mod:`onestep.sr.metrics.fidelity`).
    * ``niqe``: BasicSR's MATLAB-faithful NIQE on the SR image alone, no border crop; needs at
      least two 96x96 blocks.
    * ``lpips``, ``dists``, ``musiq``, ``clipiqa``, ``maniqa``: pyiqa, built only from files
      found in ``weights_dir`` (flat, or laid out as a torch hub cache; details in
      :mod:`onestep.sr.metrics.learned`): ``LPIPS_v0.1_alex-df73285e.pth`` plus
      ``checkpoints/alexnet-owt-7be5be79.pth``; ``DISTS_weights-f5e65c96.pth`` plus
      ``checkpoints/vgg16-397923af.pth``; ``musiq_koniq_ckpt-e95806b9.pth``; ``RN50.pt``
      (OpenAI CLIP, for ``clipiqa``); ``ckpt_koniq10k.pt`` (``maniqa``).

    A metric that cannot be computed is listed in :attr:`skipped` with the reason, never dropped
    silently nor faked: missing weights (decided when the suite is built), or an input too small
    for it (decided per call, replaced on the next call).

    Args:
        names: metrics to compute, from :data:`KNOWN_METRICS`.
        crop_border: pixels removed from each side for PSNR and SSIM (the scale, by convention).
        weights_dir: folder with the learned metrics' weight files; ``None``: none available.
        device: where the pyiqa metrics run; inputs are moved there.

    Raises:
        ValueError: an unknown or repeated metric name, or a negative ``crop_border``.
        RuntimeError: a learned metric's files exist but pyiqa cannot load them.
    """

    def __init__(
        self,
        names: Sequence[str] = ("psnr", "ssim", "niqe"),
        crop_border: int = 4,
        weights_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        names = tuple(names)
        unknown = [n for n in names if n not in LOWER_BETTER]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(KNOWN_METRICS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"metric names repeat: {list(names)}")
        if crop_border < 0:
            raise ValueError(f"crop_border must be >= 0, got {crop_border}")
        self.names = names
        self.crop_border = crop_border
        self.device = torch.device(device)
        self.lower_better: dict[str, bool] = {n: LOWER_BETTER[n] for n in names}
        self._metrics: dict[str, Callable[..., Tensor]] = {}
        self._missing: dict[str, str] = {}
        self._too_small: dict[str, str] = {}
        for name in names:
            if name in ("psnr", "ssim"):
                self._metrics[name] = build_psnr_ssim(name, crop_border, self.device)
            elif name == "niqe":
                self._metrics[name] = niqe
            else:
                assert name in LEARNED_WEIGHTS
                try:
                    self._metrics[name] = build_learned(name, weights_dir, self.device)
                except MissingWeightsError as err:
                    self._missing[name] = str(err)

    @property
    def available(self) -> tuple[str, ...]:
        """Metrics this suite can compute (those with their weights), in request order."""
        return tuple(n for n in self.names if n in self._metrics)

    @property
    def skipped(self) -> dict[str, str]:
        """Metric name -> why it is not in the results (missing weights, or the last input)."""
        return {**self._missing, **self._too_small}

    def __call__(self, sr: Tensor, hr: Tensor | None = None) -> dict[str, Tensor]:
        """Score ``sr`` (and compare with ``hr`` for full-reference metrics).

        Args:
            sr: super-resolved images ``[B, 3, H, W]`` in [0, 1].
            hr: ground truth, same shape; needed when a full-reference metric is available.

        Returns:
            Metric name -> ``[B]`` float scores on the CPU, for the metrics computed; the others
            are in :attr:`skipped`.
        """
        _check_images(sr, "sr")
        needs_hr = [n for n in self.available if n in FULL_REFERENCE]
        if hr is not None:
            _check_images(hr, "hr")
            if hr.shape != sr.shape:
                raise ValueError(f"sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in shape")
            hr = hr.to(self.device)
        elif needs_hr:
            raise ValueError(f"{needs_hr} compare with the HR image: pass hr")
        sr = sr.to(self.device)
        self._too_small = {}
        scores: dict[str, Tensor] = {}
        for name, metric in self._metrics.items():
            try:
                with torch.no_grad():
                    score = metric(sr, hr) if name in FULL_REFERENCE else metric(sr)
            except MetricSkippedError as err:
                self._too_small[name] = str(err)
                continue
            scores[name] = score.detach().float().cpu()
        return scores
