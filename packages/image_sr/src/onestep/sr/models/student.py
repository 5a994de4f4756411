"""The one-step student of OSEDiff and TAD-SR: the teacher's network run once from the LQ input.

OSEDiff (Wu et al. 2024, sec. 3.2, eq. 3): ``z_H = F_theta(z_L) = (z_L - sqrt(1 - abar_T)
eps_theta(z_L; T, c)) / sqrt(abar_T)``, i.e. the teacher network is fed the LQ latent as its noisy
input at the largest timestep and its prediction is read as the ``x0`` estimate. With the Denoiser
contract that is ``denoiser(z_L, t_start, cond)`` whatever the native prediction (eps, v, x0):
the conversion to ``x0`` is the Denoiser's. The student starts as a copy of the teacher (fine-tuned
fully or through LoRA), so step 0 is the teacher's one-step guess.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from onestep.core.noise import NoiseProcess

__all__ = ["OneStepStudent"]


class OneStepStudent(nn.Module):
    """``z_H = denoiser(z_L, t_start, cond(z_L))``: one network call from the LQ input.

    Args:
        denoiser: a Denoiser-like ``d(x_t, t, cond) -> x0`` with ``process``, usually a deep copy
            of the teacher (:meth:`from_teacher`).
        t_start: the time the LQ input is presented at (OSEDiff: ``T``, i.e. ``t = 1``; values
            below 1 are allowed for processes whose ``x0`` is ill-defined at 1).
        lr_conditioned: pass ``z_L`` as the denoiser's ``cond`` too (the package's own SR
            teacher is conditioned on it); ``False`` for a text-to-image prior, whose ``cond`` is
            given per call.
    """

    def __init__(self, denoiser: nn.Module, t_start: float = 1.0, lr_conditioned: bool = True):
        super().__init__()
        if not 0.0 < t_start <= 1.0:
            raise ValueError(f"t_start must lie in (0, 1], got {t_start}")
        self.denoiser = denoiser
        self.t_start = float(t_start)
        self.lr_conditioned = lr_conditioned

    @property
    def process(self) -> NoiseProcess:
        """The denoiser's noise process (distribution matching noises student outputs with it)."""
        return self.denoiser.process  # pyright: ignore[reportReturnType]

    @classmethod
    def from_teacher(cls, teacher: nn.Module, **kwargs: Any) -> OneStepStudent:
        """A trainable deep copy of ``teacher`` (which stays untouched)."""
        return cls(copy.deepcopy(teacher).requires_grad_(True).train(), **kwargs)

    def forward(self, z_lr: Tensor, cond: Any = None) -> Tensor:
        """``z_H`` ``[B, C, H, W]`` from ``z_L`` of the same shape."""
        t = torch.full((z_lr.shape[0],), self.t_start, device=z_lr.device, dtype=z_lr.dtype)
        return self.denoiser(z_lr, t, z_lr if self.lr_conditioned else cond)
