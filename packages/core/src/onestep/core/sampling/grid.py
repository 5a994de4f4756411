"""Sampling time grids: descending ``t`` from ``t_max`` (noise) to ``t_min`` (data)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from onestep.core.noise import NoiseProcess

__all__ = ["SPACINGS", "time_grid"]

SPACINGS: tuple[str, ...] = ("uniform", "log_snr", "karras")

# A Karras ramp from sigma/alpha beyond this starts where alpha is 0 up to rounding.
_KARRAS_GRID_MAX_RATIO = 1e6


def _scalar(fn: Callable[[Tensor], Tensor], t: float) -> float:
    return float(fn(torch.tensor([t], dtype=torch.float64)))


def _sigma_ratio(process: NoiseProcess, t: float) -> float:
    """Karras' noise level ``sigma / alpha`` at ``t`` (``inf`` where ``alpha = 0``)."""
    alpha, sigma = _scalar(process.alpha, t), _scalar(process.sigma, t)
    return math.inf if alpha == 0 else sigma / alpha


def _log_snr_grid(n_steps: int, t_max: float, t_min: float, process: NoiseProcess) -> Tensor:
    ends = process.log_snr(torch.tensor([t_max, t_min], dtype=torch.float64))
    if not bool(torch.isfinite(ends).all()):
        raise ValueError(
            f"log-SNR is infinite at t_max={t_max} or t_min={t_min} for {process!r} "
            "(alpha or sigma is 0 there); pass t_max < 1 and t_min > 0, or use spacing='karras'"
        )
    return process.t_from_log_snr(torch.linspace(float(ends[0]), float(ends[1]), n_steps + 1))


def _karras_grid(
    n_steps: int, t_max: float, t_min: float, process: NoiseProcess, rho: float
) -> Tensor:
    """EDM's sigma ramp (Karras et al. 2022, eq. 5) in ``sigma / alpha``, mapped back to ``t``."""
    r_max, r_min = _sigma_ratio(process, t_max), _sigma_ratio(process, t_min)
    if not r_max <= _KARRAS_GRID_MAX_RATIO:  # also catches inf and alpha = cos(pi/2) ~ 6e-17
        raise ValueError(
            f"sigma/alpha = {r_max:.3g} at t_max={t_max} for {process!r}: alpha is (nearly) 0 "
            "there; pass t_max < 1 (e.g. 0.999) or use spacing='uniform'"
        )
    ramp = torch.linspace(0, 1, n_steps + 1, dtype=torch.float64)
    a, b = r_max ** (1 / rho), r_min ** (1 / rho)
    return process.t_from_sigma_ratio((a + ramp * (b - a)) ** rho)


def time_grid(
    n_steps: int,
    *,
    t_max: float = 1.0,
    t_min: float = 0.0,
    spacing: str = "uniform",
    process: NoiseProcess | None = None,
    rho: float = 7.0,
) -> Tensor:
    """Descending sampling times ``t_max = ts[0] > ... > ts[n_steps] = t_min``.

    Args:
        n_steps: number of solver steps (``>= 1``).
        t_max: first time (where sampling starts), in ``(t_min, 1]``.
        t_min: last time; ``0`` means the final step lands on the data (module docstring).
        spacing: ``"uniform"`` in ``t``; ``"log_snr"`` uniform in ``log(alpha^2 / sigma^2)``
            (DPM-Solver's "logSNR" grid, Lu et al. 2022, sec. 6); ``"karras"``:
            ``r_i = (r_max^(1/rho) + i/n (r_min^(1/rho) - r_max^(1/rho)))^rho`` in
            ``r = sigma / alpha`` (Karras et al. 2022, eq. 5). For :func:`~onestep.core.noise.edm`
            with the same ``rho`` the last two coincide with ``"uniform"``.
        process: the noise process; required by ``"log_snr"`` and ``"karras"``.
        rho: the Karras ramp exponent.

    Returns:
        ``[n_steps + 1]`` float64 (cast at use); the endpoints are exactly ``t_max``, ``t_min``.
        With ``t_min = 0`` the network is last evaluated at ``ts[-2]`` (diffusers' "trailing" and
        ``final_sigmas_type="zero"``). Karras et al. instead evaluate at ``sigma_min`` and then
        step to 0; for that, append a 0 to a grid that ends at a small ``t_min > 0``.
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    if not 0.0 <= t_min < t_max <= 1.0:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; use one of {SPACINGS}")
    if spacing == "uniform":
        ts = torch.linspace(t_max, t_min, n_steps + 1, dtype=torch.float64)
    elif process is None:
        raise ValueError(f"spacing={spacing!r} needs the noise process: pass process=d.process")
    elif spacing == "log_snr":
        ts = _log_snr_grid(n_steps, t_max, t_min, process)
    else:
        ts = _karras_grid(n_steps, t_max, t_min, process, rho)
    ts = ts.to(torch.float64)
    ts[0], ts[-1] = t_max, t_min
    return _as_grid(ts)


def _as_grid(ts: Tensor | Sequence[float], min_len: int = 2) -> Tensor:
    """Validate a time grid: 1-d, finite, in [0, 1], strictly descending; float64 on the CPU."""
    grid = torch.as_tensor(ts).detach().to(device="cpu", dtype=torch.float64)
    if grid.ndim != 1 or grid.numel() < min_len:
        raise ValueError(f"ts must be a 1-d grid of >= {min_len} times, got shape {grid.shape}")
    if not bool(((grid >= 0) & (grid <= 1)).all()):
        raise ValueError(f"ts must lie in [0, 1], got {grid.tolist()}")
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError(f"ts must be strictly descending (noise to data), got {grid.tolist()}")
    return grid
