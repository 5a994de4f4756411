"""The consistency function ``f(x_t, t)`` around any Denoiser, and multi-step consistency sampling.

``f(x_t, t) = c_skip(t) x_t + c_out(t) F(x_t, t)`` where ``F`` is the wrapped Denoiser's ``x0``
prediction (Song et al. 2023, eq. 5 and Appendix C); the scalings come from
:func:`onestep.core.objectives.consistency.consistency_scalings`, shifted so that
``f(x, t_min) = x`` exactly, for any noise process.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from onestep.core.denoiser import DenoiserBase
from onestep.core.noise import NoiseProcess, append_dims
from onestep.core.objectives.consistency import consistency_scalings, edm_noise_level

__all__ = ["ConsistencyFunction", "consistency_sample"]


class ConsistencyFunction(DenoiserBase):
    """Turn a Denoiser into a consistency function with the boundary condition built in.

    Being a :class:`~onestep.core.denoiser.DenoiserBase` (its output is an ``x0`` estimate), it
    plugs into every sampler and into :func:`onestep.core.sampling.step.ode_step`.

    Args:
        denoiser: ``denoiser(x_t, t, cond) -> x0`` with a ``process`` (e.g. a
            :class:`~onestep.core.denoiser.Denoiser` around a network).
        sigma_data: data standard deviation in the scalings (0.5 for images in [-1, 1]).
        t_min: the boundary time: ``f(x, t_min) = x`` exactly. 0 is the data end of the process.
    """

    def __init__(self, denoiser: nn.Module, sigma_data: float = 0.5, t_min: float = 0.0):
        super().__init__()
        process = getattr(denoiser, "process", None)
        if not isinstance(process, NoiseProcess):
            raise TypeError(
                f"{type(denoiser).__name__} has no .process (NoiseProcess); wrap its network in "
                "onestep.core.denoiser.Denoiser(net, process, prediction)"
            )
        if not 0.0 <= t_min < 1.0:
            raise ValueError(f"t_min must lie in [0, 1), got {t_min}")
        self.denoiser = denoiser
        self.process: NoiseProcess = process
        self.sigma_data = float(sigma_data)
        self.t_min = float(t_min)

    def scalings(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(c_skip, c_out)`` at ``t`` (``[B]`` each)."""
        r_min = edm_noise_level(self.process, torch.full_like(t, self.t_min))
        return consistency_scalings(edm_noise_level(self.process, t), r_min, self.sigma_data)

    def forward(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """``f(x_t, t) = c_skip x_t + c_out F(x_t, t)``; ``t`` is ``[B]`` in ``[t_min, 1]``."""
        c_skip, c_out = self.scalings(t)
        x0 = self.denoiser(x_t, t, cond)
        n = x_t.ndim
        return append_dims(c_skip, n).to(x_t) * x_t + append_dims(c_out, n).to(x_t) * x0


def consistency_sample(
    f: nn.Module,
    z: Tensor,
    times: Sequence[float],
    cond: Any = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Multi-step consistency sampling (Song et al. 2023, Alg. 1): denoise, re-noise, repeat.

    ``x = f(sigma(t_0) z / ..., t_0)``, then for each later ``t_i``:
    ``x = f(alpha(t_i) x + sigma(t_i) eps, t_i)`` with fresh ``eps``. One evaluation per time.

    Args:
        f: the consistency function (``f(x_t, t, cond) -> x0``, with ``f.process``).
        z: standard normal latents ``[B, ...]``.
        times: decreasing times, the first usually 1 (``len(times)`` network evaluations).
        cond: passed to ``f``.
        generator: source of the re-noising noise.
    """
    if not times or any(b >= a for a, b in itertools.pairwise(times)):
        raise ValueError(f"times must be a non-empty decreasing sequence, got {list(times)}")
    process: NoiseProcess = f.process  # pyright: ignore[reportAssignmentType]
    b = z.shape[0]
    t0 = torch.full((b,), float(times[0]), device=z.device, dtype=z.dtype)
    # The prior at t_0: alpha(t_0) ~ 0 for a trajectory started at the noise end.
    x = f(process.add_noise(torch.zeros_like(z), z, t0), t0, cond)
    for t_i in times[1:]:
        t = torch.full((b,), float(t_i), device=z.device, dtype=z.dtype)
        eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        x = f(process.add_noise(x, eps, t), t, cond)
    return x
