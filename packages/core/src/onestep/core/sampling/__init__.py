"""Samplers: multi-step teacher ODE solvers, the few-step student sampler, trajectory helpers.

Modules: :mod:`.grid` (time grids), :mod:`.solvers` (Euler/DDIM, Heun, DPM-Solver++(2M), NFE),
:mod:`.ode` (noise in, samples or whole trajectories out), :mod:`.step` (one ODE step with a
start and end time per sample, for consistency targets), :mod:`.student` (few-step sampling).

Samplers are separate from networks (diffusers' rule): each takes any Denoiser-like ``d`` (called
as ``d(x_t, t, cond) -> x0`` with ``t`` of shape ``[B]``, and carrying ``d.process``) and a
descending time grid ``ts`` of shape ``[n + 1]`` (from :func:`time_grid`, or any 1-d sequence).
``x`` lives in the process's own space, ``x_t = alpha(t) x0 + sigma(t) eps``, of any shape
``[B, ...]``.

All solvers integrate the probability-flow ODE through the ``x0`` prediction, with
``eps_hat = (x_t - alpha_t x0_hat) / sigma_t``:

* :func:`euler` (alias :func:`ddim`): ``x_s = alpha_s x0_hat + sigma_s eps_hat``. This is DDIM
  with ``eta = 0`` (Song et al. 2021, eq. 12) and exactly Euler's method on the ODE written in
  Karras et al.'s (2022, eq. 4 with ``s = alpha``) variables ``y = x / alpha``,
  ``r = sigma / alpha``, where ``dy / dr = eps_hat``. For rectified flow it is plain Euler in
  ``t``: ``x_s = x_t + (s - t) (eps_hat - x0_hat)``. NFE: one per step.
* :func:`heun`: Heun's second-order method (Karras et al. 2022, Alg. 1, deterministic) in the
  same ``(y, r)`` variables, or in rectified-flow variables when sampling starts where
  ``alpha ~ 0``; the last step is Euler when it reaches the data. NFE: two per step, one for a
  final step to the data.
* :func:`dpm_solver_pp_2m`: DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in the half log-SNR
  ``lambda = log(alpha / sigma)``; the first step, a step to the data and (by default) the last
  step are first order (DDIM). NFE: one per step.

**The data end.** A step whose target time is ``0`` (or where ``sigma = 0``) returns ``x0_hat``
itself: sampling ends at the data even where the process's ``t = 0`` is a floor rather than clean
(a VP table's ``alpha(0) = sqrt(alphas_cumprod[0]) < 1``; EDM's ``sigma(0) = sigma_min``). This is
diffusers' ``set_alpha_to_one=True`` (DDIM) and ``final_sigmas_type="zero"`` (Euler, Heun,
DPM-Solver), and Karras et al.'s ``sigma_N = 0``. To stop short of the data (no final
denoising), pass ``t_min > 0``.

**Gradients.** Nothing here enters ``torch.no_grad()``: callers decide (teacher rollouts and
DMD2's backward simulation wrap calls in ``no_grad``; consistency training may differentiate).

**Start at ``t = 1``.** Where ``alpha(t_max) = 0`` (rectified flow, TrigFlow, cosine VP) an
``eps``-prediction network has no defined ``x0``; start such models at ``t_max < 1``. Samplers
do not check outputs for NaN or inf (that would synchronise the device every step).
"""

from onestep.core.sampling.grid import SPACINGS, time_grid
from onestep.core.sampling.ode import ode_pairs, sample, trajectory
from onestep.core.sampling.solvers import (
    SOLVERS,
    DenoiserLike,
    ddim,
    dpm_solver_pp_2m,
    euler,
    heun,
    nfe,
)
from onestep.core.sampling.step import STEP_SOLVERS, ode_solve, ode_step
from onestep.core.sampling.student import few_step

__all__ = [
    "SOLVERS",
    "SPACINGS",
    "STEP_SOLVERS",
    "DenoiserLike",
    "ddim",
    "dpm_solver_pp_2m",
    "euler",
    "few_step",
    "heun",
    "nfe",
    "ode_pairs",
    "ode_solve",
    "ode_step",
    "sample",
    "time_grid",
    "trajectory",
]
