"""ODE solvers on a Denoiser's ``x0``: Euler/DDIM, Heun, DPM-Solver++(2M), and their NFE.

See :mod:`onestep.core.sampling` for the conventions (the data end, gradients, ``t = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from onestep.core.noise import NoiseProcess
from onestep.core.sampling.grid import _as_grid, _scalar, _sigma_ratio

__all__ = ["SOLVERS", "DenoiserLike", "ddim", "dpm_solver_pp_2m", "euler", "heun", "nfe"]

SOLVERS: tuple[str, ...] = ("euler", "ddim", "heun", "dpm++2m")

# Heun in Karras' (x / alpha, sigma / alpha) variables degrades as sigma / alpha -> inf at the
# start (its trapezoid spans an unbounded interval); beyond this ratio heun() switches to the
# bounded rectified-flow variables.
_KARRAS_MAX_RATIO = 1e3


class DenoiserLike(Protocol):
    """What the samplers need: ``d(x_t, t, cond) -> x0`` and the noise process."""

    process: NoiseProcess

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:  # noqa: D102
        ...


# ---------------------------------------------------------------------------------------------
# Shared pieces of every solver


def _batch_time(t: float, x: Tensor) -> Tensor:
    """``t`` as a ``[B]`` tensor; at least float32 so half-precision data keep exact timesteps."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    return torch.full((x.shape[0],), t, dtype=dtype, device=x.device)


def _denoise(d: DenoiserLike, x: Tensor, t: float, cond: Any) -> Tensor:
    """``x0_hat`` at one shared time ``t`` for the whole batch."""
    return d(x, _batch_time(t, x), cond)


def _reaches_data(process: NoiseProcess, t: float) -> bool:
    return t == 0.0 or _scalar(process.sigma, t) == 0.0


def _alpha_sigma(process: NoiseProcess, t: float) -> tuple[float, float]:
    return _scalar(process.alpha, t), _scalar(process.sigma, t)


def _eps(process: NoiseProcess, x: Tensor, x0: Tensor, t: float) -> Tensor:
    """``eps_hat = (x_t - alpha_t x0_hat) / sigma_t`` (sigma_t > 0 away from the data)."""
    alpha, sigma = _alpha_sigma(process, t)
    return (x - alpha * x0) / sigma


def _ddim(process: NoiseProcess, x: Tensor, x0: Tensor, t: float, s: float) -> Tensor:
    """DDIM (eta = 0) from ``t`` to ``s`` (Song et al. 2021, eq. 12); ``x0_hat`` at the data."""
    if _reaches_data(process, s):
        return x0
    alpha_s, sigma_s = _alpha_sigma(process, s)
    return alpha_s * x0 + sigma_s * _eps(process, x, x0, t)


def _start(process: NoiseProcess, noise: Tensor, t: float) -> Tensor:
    """``x_T = alpha(T) * 0 + sigma(T) * noise``: the marginal at ``T`` without its tiny signal."""
    if not noise.is_floating_point():
        raise TypeError(f"noise must be a floating-point tensor, got {noise.dtype}")
    return _scalar(process.sigma, t) * noise


def _drive(steps: Iterator[Tensor], x: Tensor, n: int, progress: bool, desc: str) -> Tensor:
    """Run a solver's steps (with an optional progress bar) and return the last state."""
    for x_next in tqdm(steps, total=n, disable=not progress, desc=desc, leave=False):
        x = x_next
    return x


# ---------------------------------------------------------------------------------------------
# Solvers, each a generator of the states at ts[1:], so trajectory() can keep them all.


def _euler_steps(d: DenoiserLike, x: Tensor, ts: Tensor, cond: Any) -> Iterator[Tensor]:
    process = d.process
    for i in range(ts.numel() - 1):
        t, s = float(ts[i]), float(ts[i + 1])
        x = _ddim(process, x, _denoise(d, x, t, cond), t, s)
        yield x


def _heun_variables(process: NoiseProcess, t: float, karras: bool) -> tuple[float, float]:
    """``(c, tau)`` of the ODE variables ``u = x / c`` against ``tau``.

    Karras: ``c = alpha``, ``tau = sigma / alpha``, so ``du/dtau = eps_hat``. Rectified flow:
    ``c = alpha + sigma``, ``tau = sigma / (alpha + sigma)``, so ``u = (1 - tau) x0 + tau eps``
    and ``du/dtau = eps_hat - x0_hat``; ``tau`` stays in [0, 1] even where ``alpha = 0``.
    """
    alpha, sigma = _alpha_sigma(process, t)
    if karras:
        return alpha, sigma / alpha
    return alpha + sigma, sigma / (alpha + sigma)


def _heun_steps(
    d: DenoiserLike, x: Tensor, ts: Tensor, cond: Any, karras: bool
) -> Iterator[Tensor]:
    process = d.process
    for i in range(ts.numel() - 1):
        t, s = float(ts[i]), float(ts[i + 1])
        x0 = _denoise(d, x, t, cond)
        if _reaches_data(process, s):  # Alg. 1 line 6: the step to sigma = 0 stays Euler
            x = x0
            yield x
            continue
        eps = _eps(process, x, x0, t)
        alpha_s, sigma_s = _alpha_sigma(process, s)
        x_euler = alpha_s * x0 + sigma_s * eps  # Alg. 1 line 5, written as DDIM
        x0_s = _denoise(d, x_euler, s, cond)
        eps_s = _eps(process, x_euler, x0_s, s)
        c_s, tau_s = _heun_variables(process, s, karras)
        _, tau_t = _heun_variables(process, t, karras)
        slope_t, slope_s = (eps, eps_s) if karras else (eps - x0, eps_s - x0_s)
        # Alg. 1 line 8: u_s = u_t + (tau_s - tau_t) (f_t + f_s) / 2, with x = c u.
        x = x_euler + (0.5 * c_s * (tau_s - tau_t)) * (slope_s - slope_t)
        yield x


def _dpm_steps(
    d: DenoiserLike, x: Tensor, ts: Tensor, cond: Any, lower_order_final: bool
) -> Iterator[Tensor]:
    process = d.process
    n = ts.numel() - 1
    x0_prev: Tensor | None = None
    h_prev = math.inf
    for i in range(n):
        t, s = float(ts[i]), float(ts[i + 1])
        x0 = _denoise(d, x, t, cond)
        if _reaches_data(process, s):  # h = inf: only the first-order step is defined
            x = x0
            yield x
            continue
        alpha_t, sigma_t = _alpha_sigma(process, t)
        alpha_s, sigma_s = _alpha_sigma(process, s)
        h = _half_log_snr(alpha_s, sigma_s) - _half_log_snr(alpha_t, sigma_t)
        if x0_prev is None or (lower_order_final and i == n - 1):
            big_d = x0  # DPM-Solver++(1), i.e. DDIM
        else:
            c = h / (2.0 * h_prev)  # 1 / (2 r_i) with r_i = h_{i-1} / h_i; 0 after h = inf
            big_d = (1.0 + c) * x0 - c * x0_prev  # Alg. 2 line 6
        # Alg. 2 line 7: x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) D
        x = (sigma_s / sigma_t) * x + (alpha_s * -math.expm1(-h)) * big_d
        x0_prev, h_prev = x0, h
        yield x


def _half_log_snr(alpha: float, sigma: float) -> float:
    """``lambda = log(alpha / sigma)`` (Lu et al. 2022, sec. 2); ``-inf`` where ``alpha = 0``."""
    return -math.inf if alpha == 0 else math.log(alpha) - math.log(sigma)


def _steps(solver: str, d: DenoiserLike, x: Tensor, ts: Tensor, cond: Any) -> Iterator[Tensor]:
    if solver in ("euler", "ddim"):
        return _euler_steps(d, x, ts, cond)
    if solver == "heun":
        return _heun_steps(d, x, ts, cond, _use_karras(d.process, float(ts[0])))
    if solver == "dpm++2m":
        return _dpm_steps(d, x, ts, cond, lower_order_final=True)
    raise ValueError(f"unknown solver {solver!r}; use one of {SOLVERS}")


def _use_karras(process: NoiseProcess, t_start: float) -> bool:
    return _sigma_ratio(process, t_start) <= _KARRAS_MAX_RATIO


# ---------------------------------------------------------------------------------------------
# Public solvers


def euler(
    d: DenoiserLike,
    x: Tensor,
    ts: Tensor | Sequence[float],
    cond: Any = None,
    progress: bool = False,
) -> Tensor:
    """DDIM (eta = 0) = Euler on the probability-flow ODE in Karras variables.

    Each step ``t -> s`` is ``x_s = alpha_s x0_hat + sigma_s eps_hat`` with
    ``eps_hat = (x_t - alpha_t x0_hat) / sigma_t`` (Song et al. 2021, eq. 12); in
    ``y = x / alpha``, ``r = sigma / alpha`` this is ``y_s = y_t + (r_s - r_t) eps_hat``
    (Karras et al. 2022, eq. 4 and Alg. 1 line 5), and for rectified flow plain Euler in ``t``.
    A step to ``t = 0`` (or ``sigma = 0``) returns ``x0_hat``. NFE: ``len(ts) - 1``.

    Args:
        d: Denoiser-like, ``d(x_t, t, cond) -> x0`` with ``d.process``.
        x: the state at ``ts[0]``, ``[B, ...]``, in the process's space.
        ts: descending times ``[n + 1]`` (e.g. from :func:`time_grid`).
        cond: passed unchanged to ``d``.
        progress: show a tqdm bar.

    Returns:
        The state at ``ts[-1]``, same shape and dtype as ``x``.
    """
    grid = _as_grid(ts)
    return _drive(_euler_steps(d, x, grid, cond), x, grid.numel() - 1, progress, "euler")


ddim = euler


def heun(
    d: DenoiserLike,
    x: Tensor,
    ts: Tensor | Sequence[float],
    cond: Any = None,
    progress: bool = False,
    variables: str = "auto",
) -> Tensor:
    """Heun's second-order ODE solver (Karras et al. 2022, Alg. 1, with ``S_churn = 0``).

    Predictor: the :func:`euler` step to ``s``. Corrector: the trapezoid
    ``u_s = u_t + (tau_s - tau_t) (f_t + f_s) / 2`` on the ODE ``du/dtau = f``, in Karras
    variables ``u = x / alpha``, ``tau = sigma / alpha``, ``f = eps_hat`` (diffusers'
    ``HeunDiscreteScheduler``). That interval is unbounded where ``alpha -> 0``, so when
    ``sigma/alpha > 1000`` at ``ts[0]`` (flow, TrigFlow, cosine VP at ``t = 1``) ``"auto"`` takes
    rectified-flow variables ``u = x / (alpha + sigma)``, ``tau = sigma / (alpha + sigma)``,
    ``f = eps_hat - x0_hat`` (for :func:`~onestep.core.noise.flow`: plain Heun in ``t``, diffusers'
    ``FlowMatchHeunDiscreteScheduler``). Both share the predictor; a step to the data is Euler.

    NFE: ``2 (len(ts) - 1)``, minus one when ``ts[-1]`` reaches the data.

    Args:
        d: Denoiser-like, ``d(x_t, t, cond) -> x0`` with ``d.process``.
        x: the state at ``ts[0]``, ``[B, ...]``.
        ts: descending times ``[n + 1]``.
        cond: passed unchanged to ``d``.
        progress: show a tqdm bar.
        variables: ``"auto"``, ``"karras"`` or ``"flow"`` (see above).

    Returns:
        The state at ``ts[-1]``.
    """
    grid = _as_grid(ts)
    if variables not in ("auto", "karras", "flow"):
        raise ValueError(f"unknown Heun variables {variables!r}; use 'auto', 'karras' or 'flow'")
    karras = (
        _use_karras(d.process, float(grid[0])) if variables == "auto" else variables == "karras"
    )
    if karras and not math.isfinite(_sigma_ratio(d.process, float(grid[0]))):
        raise ValueError("Karras variables need alpha > 0 at ts[0]; use variables='flow'")
    steps = _heun_steps(d, x, grid, cond, karras)
    return _drive(steps, x, grid.numel() - 1, progress, "heun")


def dpm_solver_pp_2m(
    d: DenoiserLike,
    x: Tensor,
    ts: Tensor | Sequence[float],
    cond: Any = None,
    progress: bool = False,
    lower_order_final: bool = True,
) -> Tensor:
    """DPM-Solver++(2M), the multistep second-order solver on ``x0`` (Lu et al. 2022, Alg. 2).

    With ``lambda = log(alpha / sigma)``, ``h_i = lambda_{t_i} - lambda_{t_{i-1}}`` and
    ``r_i = h_{i-1} / h_i``: ``D_i = (1 + 1/(2 r_i)) x0_{i-1} - 1/(2 r_i) x0_{i-2}`` and
    ``x_{t_i} = (sigma_i / sigma_{i-1}) x_{t_{i-1}} - alpha_i (e^{-h_i} - 1) D_i``. The first
    step, a step to the data (``h = inf``) and, with ``lower_order_final``, the last step are
    first order (= :func:`euler`). diffusers' ``DPMSolverMultistepScheduler`` (``dpmsolver++``,
    ``solver_order=2``, ``midpoint``) agrees; it lowers the final order only below 15 steps.
    NFE: ``len(ts) - 1``.

    Args:
        d: Denoiser-like, ``d(x_t, t, cond) -> x0`` with ``d.process``.
        x: the state at ``ts[0]``, ``[B, ...]``.
        ts: descending times ``[n + 1]``.
        cond: passed unchanged to ``d``.
        progress: show a tqdm bar.
        lower_order_final: take the last step first order (stabler for few steps).

    Returns:
        The state at ``ts[-1]``.
    """
    grid = _as_grid(ts)
    steps = _dpm_steps(d, x, grid, cond, lower_order_final)
    return _drive(steps, x, grid.numel() - 1, progress, "dpm++2m")


def nfe(solver: str, steps: int, *, to_data: bool = True) -> int:
    """Network evaluations of ``solver`` over ``steps`` steps.

    Args:
        solver: one of :data:`SOLVERS`.
        steps: number of solver steps.
        to_data: whether the last step lands on the data (``t_min = 0``); Heun saves one there.
    """
    if solver in ("euler", "ddim", "dpm++2m"):
        return steps
    if solver == "heun":
        return 2 * steps - 1 if to_data else 2 * steps
    raise ValueError(f"unknown solver {solver!r}; use one of {SOLVERS}")
