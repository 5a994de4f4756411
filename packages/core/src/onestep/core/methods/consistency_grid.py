"""The time grid ``t_min = t_0 < t_1 < ... < t_N`` of discrete consistency models.

``uniform``: equal steps in ``t`` (LCM's DDIM sub-grid of the teacher's schedule; for the
:func:`~onestep.core.noise.edm` process this already is the Karras ramp). ``karras``: CM / iCT's
sigmas (Karras et al. 2022, eq. 5) between ``max(r(t_min), 0.002)`` and ``min(r(t_max), 80)``
mapped to ``t`` through the process (``t_from_sigma_ratio``), for any process.
"""

from __future__ import annotations

import torch
from torch import Tensor

from onestep.core.noise import NoiseProcess
from onestep.core.objectives.consistency import edm_noise_level, karras_sigmas

__all__ = ["GRIDS", "ConsistencyGrid"]

GRIDS: tuple[str, ...] = ("uniform", "karras")


class ConsistencyGrid:
    """``N + 1`` increasing times and the skipped pairs ``(t_n, t_{n+k})``.

    Args:
        process: the noise process.
        kind: ``uniform`` or ``karras``.
        t_min: first time.
        t_max: last time.
        num_scales: number of intervals ``N``.
        skip: skipping interval ``k`` (LCM), ``1 <= k <= N``.
        rho: Karras ramp exponent.
    """

    def __init__(
        self,
        process: NoiseProcess,
        kind: str = "uniform",
        t_min: float = 0.0,
        t_max: float = 1.0,
        num_scales: int = 18,
        skip: int = 1,
        rho: float = 7.0,
    ):
        if kind not in GRIDS:
            raise ValueError(f"unknown grid {kind!r}; use one of {GRIDS}")
        if not 0.0 <= t_min < t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {t_min}, {t_max}")
        self.process, self.kind, self.rho = process, kind, rho
        self.t_min, self.t_max, self.skip = t_min, t_max, skip
        self.num_scales = 0
        self.resize(num_scales)

    def resize(self, num_scales: int) -> None:
        """Use ``num_scales`` intervals (iCT's curriculum changes it during training)."""
        if num_scales < self.skip:
            raise ValueError(f"num_scales {num_scales} must be >= skip {self.skip}")
        if num_scales == self.num_scales:
            return
        self.num_scales = num_scales
        if self.kind == "uniform":
            self._times = torch.linspace(self.t_min, self.t_max, num_scales + 1)
            return
        ends = torch.tensor([self.t_min, self.t_max], dtype=torch.float64)
        r_lo, r_hi = edm_noise_level(self.process, ends).tolist()
        sigmas = karras_sigmas(num_scales + 1, max(r_lo, 0.002), min(r_hi, 80.0), self.rho)
        self._times = self.process.t_from_sigma_ratio(sigmas.double()).float()

    def times(self) -> Tensor:
        """The ``N + 1`` times, increasing."""
        return self._times

    def levels(self) -> Tensor:
        """EDM noise levels ``sigma / alpha`` at the grid times (increasing)."""
        return self.level(self._times)

    def level(self, t: Tensor) -> Tensor:
        """EDM noise level ``sigma / alpha`` at ``t``."""
        return edm_noise_level(self.process, t)

    def pair(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """``(t_n, t_{n+k})`` for interval indices ``n`` (``[B]``, ``0 <= n <= N - k``)."""
        times = self._times.to(idx.device)
        return times[idx], times[(idx + self.skip).clamp(max=self.num_scales)]
