"""The teacher side of distribution matching: classifier-free guidance and its decoupled form.

* Fixed CFG: ``x0_real = x0_u + w (x0_c - x0_u)`` (Ho & Salimans 2022, eq. 6, in ``x0`` form).
* Random-scale CFG (SNOOPI, Nguyen et al. 2024): every sample draws ``w ~ U[lo, hi]``.
* Decoupled DMD (Liu et al. 2025): the guided DMD direction
  ``x0_real - x0_fake = (x0_c - x0_fake) + (w - 1)(x0_c - x0_u)`` splits into a
  distribution-matching (DM) term and a CFG-augmentation (CA) term, each run at its own time
  sampler with its own weight.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from onestep.core.denoiser import Guided
from onestep.core.noise import append_dims

__all__ = ["TeacherGuidance"]


class TeacherGuidance:
    """How the frozen teacher is queried.

    Args:
        scale: fixed CFG weight ``w``; ``None`` and no ``scale_range``: the plain teacher.
        scale_range: ``(lo, hi)`` for random-scale CFG (overrides ``scale``).
        uncond: the null condition label (e.g. ``-1``); required with guidance.
    """

    def __init__(
        self,
        scale: float | None = None,
        scale_range: tuple[float, float] | None = None,
        uncond: int | None = None,
    ):
        if scale_range is not None and not scale_range[0] <= scale_range[1]:
            raise ValueError(f"guidance_range must be (lo, hi) with lo <= hi, got {scale_range}")
        if (scale is not None or scale_range is not None) and uncond is None:
            raise ValueError("teacher guidance needs uncond= (the null condition label, e.g. -1)")
        self.scale, self.scale_range, self.uncond = scale, scale_range, uncond

    @property
    def active(self) -> bool:
        """Whether guidance is on."""
        return self.scale is not None or self.scale_range is not None

    def weights(self, uniform: Tensor) -> Tensor:
        """Per-sample CFG weights ``[B]`` from ``uniform`` draws ``U[0, 1]`` of shape ``[B]``."""
        if self.scale_range is not None:
            lo, hi = self.scale_range
            return lo + (hi - lo) * uniform
        return torch.full_like(uniform, float(self.scale if self.scale is not None else 1.0))

    def _null(self, like: Tensor) -> Tensor:
        return torch.tensor([self.uncond], device=like.device)

    def x0(self, teacher: nn.Module, x_t: Tensor, t: Tensor, cond: Any, w: Tensor) -> Tensor:
        """Teacher ``x0``, guided with per-sample weights ``w`` when guidance is on."""
        if not self.active:
            return teacher(x_t, t, cond)
        if cond is None:
            raise ValueError(
                "teacher guidance needs conditional batches (NoiseDataModule num_classes)"
            )
        guided = Guided(teacher, 1.0, self._null(x_t))  # pyright: ignore[reportArgumentType]
        return guided(x_t, t, cond, scale=w.to(x_t))

    def cond_and_uncond(
        self, teacher: nn.Module, x_t: Tensor, t: Tensor, cond: Any
    ) -> tuple[Tensor, Tensor]:
        """``(x0_c, x0_u)`` for the decoupled terms."""
        if not self.active or cond is None:
            raise ValueError("decoupled DMD needs guidance (guidance_scale/range, uncond) and cond")
        null = self._null(x_t).expand(x_t.shape[0])
        return teacher(x_t, t, cond), teacher(x_t, t, null)

    @staticmethod
    def augmentation(x0_c: Tensor, x0_u: Tensor, w: Tensor) -> Tensor:
        """The CFG-augmentation direction ``(w - 1)(x0_c - x0_u)`` (Decoupled DMD)."""
        return append_dims(w - 1, x0_c.ndim).to(x0_c) * (x0_c - x0_u)
