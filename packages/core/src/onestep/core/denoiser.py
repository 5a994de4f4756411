"""The Denoiser contract: any network wrapped so that ``denoiser(x_t, t, cond) -> x0``.

A :class:`Denoiser` knows its network's native prediction and timestep convention and derives
``eps``, ``velocity`` and ``score`` from ``x0`` through the process
(:class:`~onestep.core.noise.NoiseProcess`).
Predictions (all for ``x_t = alpha x0 + sigma eps``):

* ``"eps"``: the noise ``eps`` (DDPM).
* ``"x0"``: the clean sample (``"sample"`` in diffusers).
* ``"v"``: ``v = alpha eps - sigma x0`` (Salimans & Ho 2022, sec. 4; ``"v_prediction"``).
* ``"flow"``: the ODE velocity ``dx_t/dt = alpha' x0 + sigma' eps``; for the rectified-flow process
  this is ``eps - x0``, the convention of SD3 / Flux / Wan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from onestep.core.noise import NoiseProcess, append_dims

__all__ = ["PREDICTIONS", "Denoiser", "DenoiserBase", "Guided", "from_x0", "to_x0"]

Prediction = Literal["eps", "x0", "v", "flow"]
PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v", "flow")
_ALIASES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v", "flow_prediction": "flow"}


def _canonical(prediction: str) -> str:
    kind = _ALIASES.get(prediction, prediction)
    if kind not in PREDICTIONS:
        raise ValueError(
            f"unknown prediction {prediction!r}; use one of {PREDICTIONS} "
            f"(or the diffusers names {tuple(_ALIASES)})"
        )
    return kind


def _coeffs(process: NoiseProcess, t: Tensor, x: Tensor) -> tuple[Tensor, ...]:
    n = x.ndim
    return tuple(
        append_dims(f(t), n).to(x.dtype)
        for f in (process.alpha, process.sigma, process.d_alpha, process.d_sigma)
    )


def to_x0(output: Tensor, prediction: str, x_t: Tensor, t: Tensor, process: NoiseProcess) -> Tensor:
    """Convert a network's native ``output`` at ``(x_t, t)`` into the ``x0`` prediction."""
    kind = _canonical(prediction)
    if kind == "x0":
        return output
    alpha, sigma, d_alpha, d_sigma = _coeffs(process, t, x_t)
    if kind == "eps":
        return (x_t - sigma * output) / alpha
    if kind == "v":
        # alpha x_t - sigma v = (alpha^2 + sigma^2) x0
        return (alpha * x_t - sigma * output) / (alpha**2 + sigma**2)
    # flow: solve x_t = alpha x0 + sigma eps, u = alpha' x0 + sigma' eps for x0.
    return (d_sigma * x_t - sigma * output) / (d_sigma * alpha - sigma * d_alpha)


def from_x0(x0: Tensor, prediction: str, x_t: Tensor, t: Tensor, process: NoiseProcess) -> Tensor:
    """Express an ``x0`` prediction at ``(x_t, t)`` in another parametrisation.

    The inverse of :func:`to_x0`.
    """
    kind = _canonical(prediction)
    if kind == "x0":
        return x0
    alpha, sigma, d_alpha, d_sigma = _coeffs(process, t, x_t)
    eps = (x_t - alpha * x0) / sigma
    if kind == "eps":
        return eps
    if kind == "v":
        return alpha * eps - sigma * x0
    return d_alpha * x0 + d_sigma * eps


TimestepFn = Callable[[Tensor], Tensor]


class DenoiserBase(nn.Module):
    """Anything with a ``process`` whose ``forward(x_t, t, cond)`` returns ``x0``.

    Derives ``eps``, ``velocity`` and ``score`` from ``x0``; :class:`Denoiser`, :class:`Guided` and
    the analytic Gaussian-mixture teacher all share these.
    """

    process: NoiseProcess

    def eps(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """Predicted noise."""
        t = _check_t(t, x_t)
        return from_x0(self(x_t, t, cond), "eps", x_t, t, self.process)

    def velocity(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """Probability-flow ODE velocity ``dx_t / dt``."""
        t = _check_t(t, x_t)
        return from_x0(self(x_t, t, cond), "flow", x_t, t, self.process)

    def score(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """``grad log p_t(x_t) = -(x_t - alpha x0) / sigma^2`` (Tweedie)."""
        t = _check_t(t, x_t)
        alpha, sigma = self.process.coefficients(t, x_t.ndim)
        return -(x_t - alpha * self(x_t, t, cond)) / sigma**2


class Denoiser(DenoiserBase):
    """Wrap a network so that ``denoiser(x_t, t, cond) -> x0``.

    Args:
        net: the network, called as ``net(x_t, timestep)`` or ``net(x_t, timestep, cond)``;
            subclasses override :meth:`call_net` for other signatures (diffusers models).
        process: the noise process the network was trained with.
        prediction: the network's native output: ``"eps"``, ``"x0"``, ``"v"`` or ``"flow"``
            (diffusers names ``epsilon``, ``sample``, ``v_prediction`` are accepted).
        timestep: the network's time input: a float multiplies ``t`` (``999`` for a diffusers
            1000-step UNet, ``1000`` for SD3-style flow transformers), a callable maps ``t`` to
            whatever the network expects (e.g. EDM's ``log(sigma) / 4``).
    """

    def __init__(
        self,
        net: nn.Module,
        process: NoiseProcess,
        prediction: str = "eps",
        timestep: float | TimestepFn = 1.0,
    ):
        super().__init__()
        self.net = net
        self.process = process
        self.prediction = _canonical(prediction)
        self.timestep = timestep

    def net_time(self, t: Tensor) -> Tensor:
        """The network's time input for ``t`` in [0, 1]."""
        if callable(self.timestep):
            return self.timestep(t)
        return t * self.timestep

    def call_net(self, x_t: Tensor, timestep: Tensor, cond: Any = None) -> Tensor:
        """Run the raw network; override for networks with other call signatures."""
        if cond is None:
            return self.net(x_t, timestep)
        return self.net(x_t, timestep, cond)

    def raw(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """The network's native prediction at ``(x_t, t)``."""
        t = _check_t(t, x_t)
        return self.call_net(x_t, self.net_time(t), cond)

    def forward(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """``E[x0 | x_t]`` as the network predicts it; ``t`` has shape ``[B]``, in [0, 1]."""
        t = _check_t(t, x_t)
        return to_x0(self.raw(x_t, t, cond), self.prediction, x_t, t, self.process)


def _check_t(t: Tensor | float, x_t: Tensor) -> Tensor:
    if not torch.is_tensor(t):
        t = torch.tensor(float(t))
    t = t.to(device=x_t.device)
    if t.ndim == 0:
        t = t.expand(x_t.shape[0])
    if t.ndim != 1 or t.shape[0] != x_t.shape[0]:
        raise ValueError(f"t must have shape [B] = [{x_t.shape[0]}], got {tuple(t.shape)}")
    return t


def _cat_cond(cond: Any, uncond: Any) -> Any:
    """Stack conditional and unconditional inputs along the batch for one doubled forward pass."""
    if torch.is_tensor(cond):
        uncond = torch.as_tensor(uncond).to(cond.device)  # held on the CPU until the first call
        return torch.cat([cond, uncond.expand_as(cond) if uncond.shape[0] == 1 else uncond])
    if isinstance(cond, Mapping):
        return {k: _cat_cond(v, uncond[k]) for k, v in cond.items()}
    raise TypeError(f"cannot batch cond of type {type(cond).__name__}; use a tensor or a dict")


class Guided(DenoiserBase):
    """Classifier-free guidance as a Denoiser (Ho & Salimans 2022, eq. 6, in ``x0`` form).

    ``x0 = x0_uncond + w (x0_cond - x0_uncond)``; for an affine process this equals guidance on
    ``eps``, ``v`` or the flow velocity. With ``scale=(lo, hi)`` every sample draws its own
    ``w ~ U[lo, hi]`` (random-scale CFG, SNOOPI, Nguyen et al. 2024).

    Args:
        denoiser: the conditional Denoiser.
        scale: a fixed guidance weight, or a ``(lo, hi)`` range for random-scale CFG.
        uncond: the null condition (same structure as ``cond``, batch 1 or B).
        generator: random source for random-scale CFG.
    """

    def __init__(
        self,
        denoiser: DenoiserBase,
        scale: float | tuple[float, float],
        uncond: Any,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if isinstance(scale, tuple) and not scale[0] <= scale[1]:
            raise ValueError(f"random CFG range must be (lo, hi) with lo <= hi, got {scale}")
        self.denoiser = denoiser
        self.process = denoiser.process
        self.scale = scale
        self.uncond = uncond
        self.generator = generator

    def weights(self, batch: int, device: torch.device) -> Tensor:
        """Guidance weight per sample, ``[B]``."""
        if isinstance(self.scale, tuple):
            lo, hi = self.scale
            gen_device = self.generator.device if self.generator is not None else device
            u = torch.rand(batch, generator=self.generator, device=gen_device)
            return (lo + (hi - lo) * u).to(device)
        return torch.full((batch,), float(self.scale), device=device)

    def forward(
        self, x_t: Tensor, t: Tensor, cond: Any = None, scale: Tensor | None = None
    ) -> Tensor:
        """Guided ``x0``; ``scale`` (``[B]``) overrides the configured weights."""
        t = _check_t(t, x_t)
        w = self.weights(x_t.shape[0], x_t.device) if scale is None else scale
        x0_c, x0_u = self.denoiser(
            torch.cat([x_t, x_t]), torch.cat([t, t]), _cat_cond(cond, self.uncond)
        ).chunk(2)
        return x0_u + append_dims(w, x_t.ndim).to(x_t.dtype) * (x0_c - x0_u)
