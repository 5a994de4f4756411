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

A guidance-conditioned network (LCM's ``f_theta(z_t, w, c, t)``, Luo et al. 2023, sec. 4.2) gets
its CFG weight ``w`` through ``cond``: :func:`with_guidance` adds ``w`` (``[B]``) under the key
``"guidance_scale"``, and :class:`Denoiser` hands the network ``timestep_cond =``
:func:`guidance_scale_embedding` ``(w, dim)``, as diffusers' ``LatentConsistencyModelPipeline``
feeds a ``UNet2DConditionModel(time_cond_proj_dim=dim)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from onestep.core.noise import NoiseProcess, append_dims

__all__ = [
    "GUIDANCE_KEY",
    "PREDICTIONS",
    "Denoiser",
    "DenoiserBase",
    "Guided",
    "from_x0",
    "guidance_scale_embedding",
    "split_guidance",
    "to_x0",
    "with_guidance",
]

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

#: key of the per-sample guidance weight ``w`` (``[B]``) in a ``cond`` dict (:func:`with_guidance`).
GUIDANCE_KEY = "guidance_scale"
_ENVELOPE_KEY = "cond"


def guidance_scale_embedding(w: Tensor, dim: int) -> Tensor:
    """LCM's w-embedding: sinusoidal features of ``(w - 1) * 1000``, ``[B]`` -> ``[B, dim]``.

    Latent Consistency Models (Luo et al. 2023, sec. 4.2, Alg. 1) condition the student on the CFG
    weight ``w``; diffusers' ``LatentConsistencyModelPipeline`` feeds this embedding to a
    ``UNet2DConditionModel(time_cond_proj_dim=dim)`` as ``timestep_cond``. With ``h = dim // 2``
    and ``s = 1000 (w - 1)``: ``[sin(s f_0), .., sin(s f_{h-1}), cos(s f_0), .., cos(s f_{h-1})]``,
    ``f_i = 10000^(-i / (h - 1))``, zero-padded by one column when ``dim`` is odd.

    ``w`` is the weight of :class:`Guided` (``x0_u + w (x0_c - x0_u)``; ``w = 1``: no guidance),
    hence the shift by 1: the LCM training script embeds its ``w`` of ``x0_c + w (x0_c - x0_u)``
    directly, the pipeline embeds ``guidance_scale - 1``; both are this ``w - 1``.

    Args:
        w: guidance weights ``[B]``.
        dim: embedding size (the UNet's ``time_cond_proj_dim``), at least 4.

    Returns:
        ``[B, dim]`` in float32 (cast it to the network's dtype).
    """
    if dim < 4:
        raise ValueError(f"the guidance embedding needs dim >= 4, got {dim}")
    w = torch.as_tensor(w)
    if w.ndim != 1:
        raise ValueError(f"w must have shape [B], got {tuple(w.shape)}")
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=w.device) / (half - 1)
    freqs = torch.exp(-math.log(10000.0) * exponent)
    angle = (w.to(torch.float32) - 1.0)[:, None] * 1000.0 * freqs[None, :]
    emb = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)
    return torch.nn.functional.pad(emb, (0, dim % 2))


def with_guidance(cond: Any, w: Tensor) -> dict[str, Any]:
    """``cond`` plus the per-sample guidance weight ``w`` (``[B]``), for a guidance-taking network.

    A dict ``cond`` gets ``w`` under :data:`GUIDANCE_KEY` (``{**cond, "guidance_scale": w}``, e.g.
    diffusers keyword arguments); anything else (``None``, labels, text embeddings) is wrapped as
    ``{"cond": cond, "guidance_scale": w}``. :func:`split_guidance` undoes either.
    """
    if isinstance(cond, Mapping):
        if GUIDANCE_KEY in cond:
            raise ValueError(f"cond already holds {GUIDANCE_KEY!r}")
        return {**cond, GUIDANCE_KEY: w}
    return {_ENVELOPE_KEY: cond, GUIDANCE_KEY: w}


def split_guidance(cond: Any) -> tuple[Any, Tensor | None]:
    """``(cond, w)``: the inverse of :func:`with_guidance`; ``w`` is ``None`` if ``cond`` has none.

    A dict left holding only the key ``"cond"`` is unwrapped to its value.
    """
    if not isinstance(cond, Mapping) or GUIDANCE_KEY not in cond:
        return cond, None
    rest = {k: v for k, v in cond.items() if k != GUIDANCE_KEY}
    w = cond[GUIDANCE_KEY]
    if set(rest) == {_ENVELOPE_KEY}:
        return rest[_ENVELOPE_KEY], w
    return (rest or None), w


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

    A ``cond`` made by :func:`with_guidance` carries a guidance weight ``w`` ``[B]`` (or a scalar);
    the network then gets ``timestep_cond = guidance_scale_embedding(w, guidance_dim)`` through
    :meth:`call_net_guided` (here ``net(x_t, timestep, cond, timestep_cond=...)``).
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

    def call_net_guided(
        self, x_t: Tensor, timestep: Tensor, cond: Any, timestep_cond: Tensor
    ) -> Tensor:
        """Run the raw network with LCM's w-embedding ``timestep_cond`` ``[B, guidance_dim]``."""
        return self.net(x_t, timestep, cond, timestep_cond=timestep_cond)

    @property
    def guidance_dim(self) -> int:
        """Size of the network's w-embedding; 0 if it takes no guidance weight.

        Read from a diffusers model's ``config.time_cond_proj_dim``, else from ``net.guidance_dim``
        (e.g. :class:`~onestep.core.testing.TinyMLP`).
        """
        config = getattr(self.net, "config", None)
        dim = None if config is None else getattr(config, "time_cond_proj_dim", None)
        if dim is None:
            dim = getattr(self.net, "guidance_dim", None)
        return int(dim or 0)

    def guidance_embedding(self, w: Tensor | float, x_t: Tensor) -> Tensor:
        """:func:`guidance_scale_embedding` of ``w`` (``[B]`` or a scalar) for this network."""
        dim = self.guidance_dim
        if dim == 0:
            raise ValueError(
                f"{type(self.net).__name__} takes no guidance weight (no time_cond_proj_dim / "
                "guidance_dim), but cond carries one; build it with a w-embedding or drop w"
            )
        w = torch.as_tensor(w, device=x_t.device)
        if w.ndim == 0:
            w = w.expand(x_t.shape[0])
        if w.shape != (x_t.shape[0],):
            raise ValueError(f"w must have shape [B] = [{x_t.shape[0]}], got {tuple(w.shape)}")
        return guidance_scale_embedding(w, dim).to(x_t.dtype)

    def raw(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """The network's native prediction at ``(x_t, t)``."""
        t = _check_t(t, x_t)
        cond, w = split_guidance(cond)
        if w is None:
            return self.call_net(x_t, self.net_time(t), cond)
        emb = self.guidance_embedding(w, x_t)
        return self.call_net_guided(x_t, self.net_time(t), cond, emb)

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
