"""Super-resolvers from a space and a denoiser: the teacher's N-step sampler, one-step students.

Both start from ``z_L = encode(upsample(lr))``; the teacher solves its probability-flow ODE from
noise conditioned on ``z_L`` (SR3-style), a student maps ``z_L`` to ``z_H`` in one call.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from onestep.core import sampling
from onestep.sr.resolver import SuperResolver, check_lr, upsample
from onestep.sr.space import Space

__all__ = ["SamplerResolver", "StudentResolver", "encode_lr"]


def encode_lr(space: Space, lr: Tensor, scale: int) -> Tensor:
    """``z_L = encode(upsample(lr))``: the LR image on the HR grid, in the method's space."""
    return space.encode(upsample(lr, scale))


class SamplerResolver(SuperResolver):
    """The conditional teacher at ``steps`` ODE steps from seeded noise.

    Args:
        denoiser: ``denoiser(x_t, t, z_L) -> x0`` with a ``process``.
        space: where it works.
        scale: SR factor.
        steps: solver steps.
        solver: ``euler`` (= DDIM), ``heun`` or ``dpm++2m`` (see
            :func:`onestep.core.sampling.sample`).
        seed: seed of the starting noise (same image, same output).
        multiple: side multiple the LR input needs (see :class:`SuperResolver`).
    """

    def __init__(
        self,
        denoiser: nn.Module,
        space: Space,
        scale: int,
        steps: int,
        solver: str = "euler",
        seed: int = 0,
        multiple: int = 1,
    ) -> None:
        super().__init__()
        self.denoiser, self.space, self.scale = denoiser, space, scale
        self.steps, self.solver, self.seed, self.multiple = steps, solver, seed, multiple

    @torch.no_grad()
    def forward(self, lr: Tensor) -> Tensor:
        """Sample ``z_H`` given ``z_L`` and decode it, clamped to [0, 1]."""
        check_lr(lr)
        z_lr = encode_lr(self.space, lr, self.scale)
        gen = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(z_lr.shape, generator=gen).to(z_lr)
        z = sampling.sample(
            self.denoiser,  # pyright: ignore[reportArgumentType]
            noise,
            self.steps,
            solver=self.solver,
            cond=z_lr,
        )
        return self.space.decode(z).clamp(0.0, 1.0)


class StudentResolver(SuperResolver):
    """A one-step student ``z_H = student(z_L)`` as a super-resolver."""

    def __init__(self, student: nn.Module, space: Space, scale: int, multiple: int = 1) -> None:
        super().__init__()
        self.student, self.space, self.scale, self.multiple = student, space, scale, multiple

    @torch.no_grad()
    def forward(self, lr: Tensor) -> Tensor:
        """One network call, decoded and clamped to [0, 1]."""
        check_lr(lr)
        return self.space.decode(self.student(encode_lr(self.space, lr, self.scale))).clamp(0, 1)
