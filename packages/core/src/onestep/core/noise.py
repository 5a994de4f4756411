"""Noise processes: ``x_t = alpha(t) * x0 + sigma(t) * eps`` with continuous ``t`` in [0, 1].

Every distillation objective in onestep is written against this one contract, so a loss written
for a DDPM image model also serves an EDM audio model or a rectified-flow policy. ``t = 0`` is
(near) the data, ``t = 1`` is (near) pure noise. Presets:

* :func:`vp` - variance preserving (DDPM / Stable Diffusion), from a diffusers ``alphas_cumprod``
  table (interpolated), or the continuous cosine schedule (Nichol & Dhariwal 2021, eq. 17).
* :func:`edm` - variance exploding with the Karras et al. (2022) sigma ramp (eq. 5), ``alpha = 1``.
* :func:`flow` - rectified flow / flow matching, ``alpha = 1 - t``, ``sigma = t`` (Liu et al. 2022).
* :func:`trig` - TrigFlow, ``alpha = cos(t pi/2)``, ``sigma = sin(t pi/2)`` in data units
  ``sigma_d`` (Lu & Song 2024, sCM, eq. 2 with ``t`` rescaled from [0, pi/2] to [0, 1]).

Time samplers (:func:`uniform`, :func:`logit_normal`, :func:`edm_lognormal`, :func:`u_shaped`,
:func:`discrete`) are plain functions returning ``t`` of shape ``[n]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "EDM",
    "Flow",
    "NoiseProcess",
    "Trig",
    "VPCosine",
    "VPTable",
    "append_dims",
    "discrete",
    "edm",
    "edm_lognormal",
    "flow",
    "logit_normal",
    "trig",
    "u_shaped",
    "uniform",
    "vp",
]


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims so a ``[B]`` tensor broadcasts against ``[B, ...]``."""
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a {v.ndim}-d tensor to {ndim} dims")
    return v.reshape(*v.shape, *([1] * (ndim - v.ndim)))


class NoiseProcess:
    """An affine noise process ``x_t = alpha(t) x0 + sigma(t) eps``, ``t`` in [0, 1].

    Subclasses give ``alpha``, ``sigma`` and their time derivatives; everything else
    (noising, signal-to-noise ratio, its inverse) is derived here.
    """

    name: str = "process"

    def alpha(self, t: Tensor) -> Tensor:
        """Signal scale at ``t`` (same shape as ``t``)."""
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        """Noise scale at ``t`` (same shape as ``t``)."""
        raise NotImplementedError

    def d_alpha(self, t: Tensor) -> Tensor:
        """``d alpha / d t``."""
        raise NotImplementedError

    def d_sigma(self, t: Tensor) -> Tensor:
        """``d sigma / d t``."""
        raise NotImplementedError

    def coefficients(self, t: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
        """``alpha(t)`` and ``sigma(t)`` shaped to broadcast against an ``ndim``-d batch."""
        return append_dims(self.alpha(t), ndim), append_dims(self.sigma(t), ndim)

    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """``x_t = alpha(t) x0 + sigma(t) eps``; ``t`` has shape ``[B]``."""
        alpha, sigma = self.coefficients(t, x0.ndim)
        return alpha * x0 + sigma * eps

    def log_snr(self, t: Tensor) -> Tensor:
        """``lambda(t) = log(alpha^2 / sigma^2)``; decreasing in ``t``."""
        return 2.0 * (torch.log(self.alpha(t)) - torch.log(self.sigma(t)))

    def t_from_log_snr(self, log_snr: Tensor, iters: int = 60) -> Tensor:
        """Invert :meth:`log_snr` by bisection (works for every monotone process).

        Values beyond the process's range clamp to ``t = 0`` or ``t = 1``.
        """
        lo = torch.zeros_like(log_snr, dtype=torch.float64)
        hi = torch.ones_like(log_snr, dtype=torch.float64)
        target = log_snr.to(torch.float64)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > target  # still too little noise: move right
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return (0.5 * (lo + hi)).to(log_snr.dtype)

    def t_from_sigma_ratio(self, ratio: Tensor) -> Tensor:
        """``t`` at which the EDM noise level ``sigma / alpha`` equals ``ratio``."""
        return self.t_from_log_snr(-2.0 * torch.log(ratio))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class VPTable(NoiseProcess):
    """Variance preserving process from a discrete ``alphas_cumprod`` table (DDPM, diffusers).

    Training step ``k`` of ``N`` sits at ``t = k / (N - 1)``, so ``t * (N - 1)`` is the diffusers
    timestep; between grid points ``log alphas_cumprod`` is interpolated linearly. ``alpha(0)`` is
    ``sqrt(alphas_cumprod[0])`` (close to, not exactly, 1), as in the discrete model.
    """

    name = "vp"

    def __init__(self, alphas_cumprod: Tensor | Sequence[float]):
        table = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if table.ndim != 1 or table.numel() < 2:
            raise ValueError(f"alphas_cumprod needs a 1-d table of >= 2 values, not {table.shape}")
        if not bool(((table > 0) & (table < 1 + 1e-12)).all()):
            raise ValueError("alphas_cumprod must lie in (0, 1]")
        if not bool((table[1:] <= table[:-1]).all()):
            raise ValueError("alphas_cumprod must be non-increasing")
        self.alphas_cumprod = table
        self._log_ac = torch.log(table)
        self.num_train_timesteps = table.numel()
        self._cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def _table(self, like: Tensor) -> Tensor:
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = self._log_ac.to(device=like.device, dtype=like.dtype)
        return self._cache[key]

    def _interp(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Interpolated ``log alphas_cumprod`` at ``t`` and its slope in ``t``."""
        log_ac = self._table(t)
        n = self.num_train_timesteps
        k = t.clamp(0, 1) * (n - 1)
        i = k.floor().long().clamp(max=n - 2)
        w = k - i
        lo, hi = log_ac[i], log_ac[i + 1]
        return lo + w * (hi - lo), (hi - lo) * (n - 1)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(0.5 * self._interp(t)[0])

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(self._interp(t)[0]))

    def d_alpha(self, t: Tensor) -> Tensor:
        log_ac, slope = self._interp(t)
        return 0.5 * torch.exp(0.5 * log_ac) * slope

    def d_sigma(self, t: Tensor) -> Tensor:
        log_ac, slope = self._interp(t)
        return -0.5 * torch.exp(log_ac) * slope / torch.sqrt(-torch.expm1(log_ac))

    def timestep(self, t: Tensor) -> Tensor:
        """The diffusers timestep ``t * (N - 1)`` for ``t`` in [0, 1]."""
        return t * (self.num_train_timesteps - 1)

    def __repr__(self) -> str:
        return f"VPTable(num_train_timesteps={self.num_train_timesteps})"


class VPCosine(NoiseProcess):
    """Continuous cosine VP schedule (Nichol & Dhariwal 2021, eq. 17).

    ``alpha(t)^2 = cos^2(((t + s) / (1 + s)) pi/2) / cos^2((s / (1 + s)) pi/2)``, so
    ``alpha(0) = 1`` and ``alpha(1) = 0`` exactly; an eps-prediction network has no defined ``x0``
    at ``t = 1``, so start its samplers slightly below 1.
    """

    name = "vp-cosine"

    def __init__(self, s: float = 0.008):
        self.s = s
        self._f0 = math.cos(s / (1 + s) * math.pi / 2)

    def _phase(self, t: Tensor) -> Tensor:
        return (t + self.s) / (1 + self.s) * (math.pi / 2)

    def alpha(self, t: Tensor) -> Tensor:
        return (torch.cos(self._phase(t)) / self._f0).clamp(0, 1)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt((1 - self.alpha(t) ** 2).clamp_min(0))

    def d_alpha(self, t: Tensor) -> Tensor:
        return -torch.sin(self._phase(t)) / self._f0 * (math.pi / 2) / (1 + self.s)

    def d_sigma(self, t: Tensor) -> Tensor:
        alpha, sigma = self.alpha(t), self.sigma(t)
        return -alpha * self.d_alpha(t) / sigma.clamp_min(1e-12)

    def __repr__(self) -> str:
        return f"VPCosine(s={self.s})"


class EDM(NoiseProcess):
    """Variance exploding process with the Karras et al. (2022) noise ramp (eq. 5).

    ``alpha = 1`` and ``sigma(t) = (a + t (b - a))^rho`` with ``a = sigma_min^(1/rho)``,
    ``b = sigma_max^(1/rho)``, so a uniform grid in ``t`` is the EDM sampling schedule and
    ``sigma(0) = sigma_min``.
    """

    name = "edm"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
        if not 0 <= sigma_min < sigma_max:
            raise ValueError(f"need 0 <= sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho
        self._a = sigma_min ** (1 / rho)
        self._b = sigma_max ** (1 / rho) - self._a

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return (self._a + t * self._b) ** self.rho

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return self.rho * self._b * (self._a + t * self._b) ** (self.rho - 1)

    def t_from_sigma_ratio(self, ratio: Tensor) -> Tensor:
        """Closed-form inverse of the Karras ramp, clamped to [0, 1]."""
        return ((ratio ** (1 / self.rho) - self._a) / self._b).clamp(0, 1)

    def t_from_log_snr(self, log_snr: Tensor, iters: int = 60) -> Tensor:
        return self.t_from_sigma_ratio(torch.exp(-0.5 * log_snr))

    def __repr__(self) -> str:
        return f"EDM(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, rho={self.rho})"


class Flow(NoiseProcess):
    """Rectified flow / flow matching: ``x_t = (1 - t) x0 + t eps`` (Liu et al. 2022, eq. 1)."""

    name = "flow"

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - t

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def d_alpha(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def t_from_sigma_ratio(self, ratio: Tensor) -> Tensor:
        return ratio / (1 + ratio)

    def t_from_log_snr(self, log_snr: Tensor, iters: int = 60) -> Tensor:
        return self.t_from_sigma_ratio(torch.exp(-0.5 * log_snr))


class Trig(NoiseProcess):
    """TrigFlow (Lu & Song 2024, sCM, eq. 2): ``x_t = cos(tau) x0 + sin(tau) sigma_d eps``.

    ``tau = t pi/2`` maps the paper's ``[0, pi/2]`` to ``t`` in [0, 1]. ``sigma_d`` is the data
    standard deviation (0.5 for images in [-1, 1]).
    """

    name = "trig"

    def __init__(self, sigma_d: float = 0.5):
        self.sigma_d = sigma_d

    def alpha(self, t: Tensor) -> Tensor:
        return torch.cos(t * (math.pi / 2))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sin(t * (math.pi / 2)) * self.sigma_d

    def d_alpha(self, t: Tensor) -> Tensor:
        return -torch.sin(t * (math.pi / 2)) * (math.pi / 2)

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.cos(t * (math.pi / 2)) * (math.pi / 2) * self.sigma_d

    def t_from_sigma_ratio(self, ratio: Tensor) -> Tensor:
        return torch.atan(ratio / self.sigma_d) * (2 / math.pi)

    def t_from_log_snr(self, log_snr: Tensor, iters: int = 60) -> Tensor:
        return self.t_from_sigma_ratio(torch.exp(-0.5 * log_snr))

    def __repr__(self) -> str:
        return f"Trig(sigma_d={self.sigma_d})"


# ---------------------------------------------------------------------------------------------
# Presets


def vp(
    alphas_cumprod: Tensor | Sequence[float] | None = None,
    *,
    schedule: str = "cosine",
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
) -> NoiseProcess:
    """Variance-preserving preset.

    Args:
        alphas_cumprod: a diffusers scheduler's ``alphas_cumprod``; interpolated in ``t``.
        schedule: without a table, ``"cosine"`` (continuous), ``"linear"`` (DDPM betas) or
            ``"scaled_linear"`` (Stable Diffusion betas) over ``num_train_timesteps`` steps.
        num_train_timesteps: table length for the discrete schedules.
        beta_start: first beta of the discrete schedules.
        beta_end: last beta of the discrete schedules.
    """
    if alphas_cumprod is not None:
        return VPTable(alphas_cumprod)
    if schedule == "cosine":
        return VPCosine()
    if schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = (
            torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64)
            ** 2
        )
    else:
        raise ValueError(f"unknown VP schedule {schedule!r}; use cosine, linear or scaled_linear")
    return VPTable(torch.cumprod(1 - betas, 0))


def edm(sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> NoiseProcess:
    """EDM / variance-exploding preset (Karras et al. 2022)."""
    return EDM(sigma_min, sigma_max, rho)


def flow() -> NoiseProcess:
    """Rectified-flow preset: ``alpha = 1 - t``, ``sigma = t``."""
    return Flow()


def trig(sigma_d: float = 0.5) -> NoiseProcess:
    """TrigFlow preset (sCM)."""
    return Trig(sigma_d)


# ---------------------------------------------------------------------------------------------
# Time samplers: each returns t of shape [n] in [t_min, t_max].


def _kw(device, generator):
    return {"device": device, "generator": generator}


def uniform(
    n: int,
    *,
    t_min: float = 0.0,
    t_max: float = 1.0,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``t ~ U[t_min, t_max]``."""
    return t_min + (t_max - t_min) * torch.rand(n, **_kw(device, generator))


def logit_normal(
    n: int,
    *,
    mean: float = 0.0,
    std: float = 1.0,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``t = sigmoid(u)``, ``u ~ N(mean, std)`` (SD3, Esser et al. 2024, eq. 19)."""
    return torch.sigmoid(mean + std * torch.randn(n, **_kw(device, generator)))


def edm_lognormal(
    n: int,
    process: NoiseProcess,
    *,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """EDM training noise: ``ln(sigma / alpha) ~ N(p_mean, p_std)`` (Karras et al. 2022, Table 1).

    Mapped to ``t`` through the process, so it applies to any process, not only :func:`edm`.
    """
    ratio = torch.exp(p_mean + p_std * torch.randn(n, **_kw(device, generator)))
    return process.t_from_sigma_ratio(ratio)


def u_shaped(
    n: int,
    *,
    a: float = 4.0,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """U-shaped density ``p(t) ∝ cosh(a (t - 1/2))`` (RF++, Lee et al. 2024, sec. 3.2).

    Sampled exactly by inverting its CDF ``F(t) = (sinh(a(t-1/2)) + sinh(a/2)) / (2 sinh(a/2))``.
    """
    if a <= 0:
        raise ValueError(f"u_shaped needs a > 0, got {a}")
    u = torch.rand(n, **_kw(device, generator))
    return 0.5 + torch.asinh((2 * u - 1) * math.sinh(a / 2)) / a


def discrete(
    n: int,
    values: Sequence[float] | Tensor,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``t`` drawn uniformly from a fixed set (few-step students, DMD2 backward simulation)."""
    table = torch.as_tensor(values, dtype=torch.float32, device=device)
    if table.ndim != 1 or table.numel() == 0:
        raise ValueError("discrete() needs a non-empty 1-d set of times")
    idx = torch.randint(table.numel(), (n,), **_kw(device, generator))
    return table[idx]
