"""One teacher ODE step (or a few) with a separate start and end time per sample.

Consistency distillation, CTM and TSCD need the teacher's probability-flow ODE from ``t`` to
``s`` where both differ across the batch (``t``, ``s``: ``[B]``), unlike the grid samplers of
:mod:`.solvers` that move the whole batch along one time grid. Same conventions as those
(``x0``-prediction Denoiser, ``eps_hat = (x_t - alpha_t x0_hat) / sigma_t``):

* ``"ddim"`` / ``"euler"``: ``x_s = alpha_s x0_hat + sigma_s eps_hat`` (Song et al. 2021,
  eq. 12; Euler in Karras' ``(x / alpha, sigma / alpha)`` variables, plain Euler in ``t`` for
  rectified flow). LCM's teacher step. One evaluation.
* ``"heun"``: the trapezoid in the same variables (Karras et al. 2022, Alg. 1): an Euler
  predictor to ``s``, a second evaluation there, the mean of the two ``eps_hat``. Samples whose
  ``s`` is the data end (``sigma_s = 0``) keep the Euler step, as Karras' sampler does. Two
  evaluations. Needs ``alpha > 0`` at ``t`` (not rectified flow's ``t = 1``).

Nothing here enters ``no_grad``; callers wrap teacher calls themselves.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from onestep.core.noise import append_dims
from onestep.core.sampling.solvers import DenoiserLike

__all__ = ["STEP_SOLVERS", "ode_solve", "ode_step"]

STEP_SOLVERS: tuple[str, ...] = ("euler", "ddim", "heun")


def _check(x: Tensor, t: Tensor, s: Tensor) -> None:
    b = x.shape[0]
    if t.shape != (b,) or s.shape != (b,):
        raise ValueError(
            f"t and s must have shape [B] = [{b}], got {tuple(t.shape)} and {tuple(s.shape)}"
        )


def _eps_hat(d: DenoiserLike, x: Tensor, x0: Tensor, t: Tensor) -> Tensor:
    alpha, sigma = d.process.coefficients(t, x.ndim)
    return (x - alpha * x0) / sigma


def _ddim_to(d: DenoiserLike, x0: Tensor, eps: Tensor, s: Tensor) -> Tensor:
    alpha_s, sigma_s = d.process.coefficients(s, x0.ndim)
    return alpha_s * x0 + sigma_s * eps


def ode_step(
    d: DenoiserLike, x: Tensor, t: Tensor, s: Tensor, solver: str = "ddim", cond: Any = None
) -> Tensor:
    """The teacher's ODE from ``x`` at ``t`` to ``s``, per sample, in one step.

    Args:
        d: the teacher, ``d(x_t, t, cond) -> x0`` with ``d.process``.
        x: states at ``t``, ``[B, ...]``.
        t: start times ``[B]``.
        s: end times ``[B]`` (usually ``s < t``; equal times return ``x``).
        solver: ``"ddim"`` (= ``"euler"``) or ``"heun"``.
        cond: passed to ``d``.

    Returns:
        States at ``s``, ``[B, ...]``.
    """
    if solver not in STEP_SOLVERS:
        raise ValueError(f"unknown step solver {solver!r}; use one of {STEP_SOLVERS}")
    _check(x, t, s)
    x0 = d(x, t, cond)
    eps = _eps_hat(d, x, x0, t)
    x_s = _ddim_to(d, x0, eps, s)
    if solver == "heun":
        x_s = _heun_correct(d, x, x_s, eps, t, s, cond)
    same = append_dims(t == s, x.ndim)
    return torch.where(same, x, x_s)


def _heun_correct(
    d: DenoiserLike, x: Tensor, x_pred: Tensor, eps_t: Tensor, t: Tensor, s: Tensor, cond: Any
) -> Tensor:
    """Karras' trapezoid in ``y = x / alpha``, ``r = sigma / alpha`` (``dy / dr = eps_hat``)."""
    process = d.process
    alpha_t, sigma_t = process.coefficients(t, x.ndim)
    alpha_s, sigma_s = process.coefficients(s, x.ndim)
    at_data = sigma_s == 0
    # Samples ending at the data keep Euler; evaluate the rest at a safe time.
    s_eval = torch.where(s.reshape(-1) > 0, s, t)
    x0_s = d(x_pred, s_eval, cond)
    eps_s = _eps_hat(d, x_pred, x0_s, s_eval)
    r_t, r_s = sigma_t / alpha_t, sigma_s / alpha_s
    y_s = x / alpha_t + (r_s - r_t) * 0.5 * (eps_t + eps_s)
    return torch.where(at_data, x_pred, alpha_s * y_s)


def ode_solve(
    d: DenoiserLike,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    steps: int,
    solver: str = "ddim",
    cond: Any = None,
) -> Tensor:
    """The teacher's ODE from ``t`` to ``s`` per sample in ``steps`` equal steps in ``t``.

    CTM's teacher target (Kim et al. 2024, sec. 4: the solver from ``t`` to an intermediate
    ``u``) and multi-step consistency targets. NFE: ``steps`` (DDIM) or ``2 * steps`` (Heun).
    """
    if steps < 1:
        raise ValueError(f"ode_solve needs steps >= 1, got {steps}")
    _check(x, t, s)
    for i in range(steps):
        a = t + (s - t) * (i / steps)
        b = t + (s - t) * ((i + 1) / steps)
        x = ode_step(d, x, a, b, solver, cond)
    return x
