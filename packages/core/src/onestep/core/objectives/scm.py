"""Continuous-time consistency models in TrigFlow (sCM; Lu & Song 2024, arXiv 2410.11081).

TrigFlow (sec. 3, eq. 2): ``x_tau = cos(tau) x0 + sin(tau) z``, ``z ~ N(0, sigma_d^2 I)``,
``tau`` in ``[0, pi/2]``. Here ``tau`` is the paper's ``t`` in radians; onestep's
:func:`~onestep.core.noise.trig` process uses ``t = tau / (pi/2)`` in [0, 1], and ``z`` there is
``sigma_d * eps`` with ``eps ~ N(0, I)``. Every function below takes the angle ``tau``.

The consistency model (eq. 6) is ``f(x_tau, tau) = cos(tau) x_tau - sin(tau) sigma_d F``, with
``F = F_theta(x_tau / sigma_d, c_noise(tau))`` the network output: ``f(x, 0) = x`` exactly.

The training signal (sec. 4, the gradient below eq. 7, and eq. 8 with tangent warm-up):

    df-/dtau = -cos(tau) (sigma_d F- - dx/dtau) - sin(tau) (x_tau + sigma_d dF-/dtau)
    g        = -cos^2(tau) (sigma_d F- - dx/dtau) - r cos(tau) sin(tau) (x_tau + sigma_d dF-/dtau)

``g = cos(tau) df-/dtau`` at ``r = 1``; ``F-`` is the stop-gradient network (``theta-``), and
``dF-/dtau`` the total derivative along the trajectory, a Jacobian-vector product
(:mod:`onestep.core.methods.scm_jvp`). The paper's gradient, with weighting
``w(tau) = 1 / (sigma_d tan tau)``, is ``grad_theta E[-w sigma_d sin(tau) F_theta^T df-/dtau]``
``= -E[g^T grad_theta F_theta]``, which equals ``1/2 grad_theta ||F_theta - F- - g||^2`` at
``theta = theta-``. :func:`scm_loss` is that square with the adaptive weight (eq. 9).
"""

from __future__ import annotations

import torch
from torch import Tensor

from onestep.core.noise import append_dims
from onestep.core.objectives.dsm import check_same_shape, mean_flat

__all__ = [
    "clip_tangent",
    "normalize_tangent",
    "proposal_angle",
    "scm_loss",
    "scm_tangent",
    "tangent_warmup",
    "trigflow_consistency",
    "trigflow_velocity",
]


def _angle(tau: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """``cos(tau)``, ``sin(tau)`` shaped to broadcast against ``x``; ``tau`` must be ``[B]``."""
    if tau.shape != (x.shape[0],):
        raise ValueError(f"tau must have shape [B] = [{x.shape[0]}], got {tuple(tau.shape)}")
    tau = append_dims(tau.to(x.dtype), x.ndim)
    return torch.cos(tau), torch.sin(tau)


def trigflow_consistency(x_t: Tensor, F: Tensor, tau: Tensor, sigma_d: float) -> Tensor:
    """The sCM consistency function ``f = cos(tau) x_t - sin(tau) sigma_d F`` (eq. 6).

    Args:
        x_t: noisy sample ``[B, ...]`` at angle ``tau``.
        F: network output ``F_theta(x_t / sigma_d, c_noise(tau))``, same shape.
        tau: angle in radians, ``[B]``, in ``[0, pi/2]``.
        sigma_d: data standard deviation.

    Returns:
        The clean-sample estimate ``[B, ...]``; equals ``x_t`` bit for bit at ``tau = 0``.
    """
    check_same_shape(x_t=x_t, F=F)
    cos, sin = _angle(tau, x_t)
    return cos * x_t - sin * sigma_d * F


def trigflow_velocity(x_t: Tensor, x0: Tensor, tau: Tensor) -> Tensor:
    """PF-ODE velocity ``dx/dtau`` of TrigFlow given the clean-sample estimate ``x0``.

    From ``x_t = cos x0 + sin z`` and ``dx/dtau = -sin x0 + cos z``, eliminating ``z``:
    ``dx/dtau = (cos(tau) x_t - x0) / sin(tau)``. With ``x0 = E[x0 | x_t]`` from any teacher
    (evaluated at the same signal-to-noise ratio) this is the teacher's TrigFlow ODE, i.e. the
    training-free conversion of SANA-Sprint (Chen et al. 2025, sec. 3.1). Undefined at ``tau = 0``.

    Args:
        x_t: noisy sample ``[B, ...]``.
        x0: clean-sample estimate at ``(x_t, tau)``, same shape.
        tau: angle ``[B]`` in ``(0, pi/2]``.
    """
    check_same_shape(x_t=x_t, x0=x0)
    if bool((tau <= 0).any()):
        raise ValueError("trigflow_velocity needs tau > 0; sample tau away from 0 (e.g. >= 1e-3)")
    cos, sin = _angle(tau, x_t)
    return (cos * x_t - x0) / sin


def scm_tangent(
    x_t: Tensor,
    dxdt: Tensor,
    F_minus: Tensor,
    dF_dt: Tensor,
    tau: Tensor,
    sigma_d: float,
    r: float = 1.0,
    cos_power: float = 1.0,
) -> Tensor:
    """The sCM tangent ``g = cos(tau) df-/dtau`` with warm-up factor ``r`` (sec. 4.2, eq. 8).

    ``g = -cos^2(tau)(sigma_d F- - dx/dtau) - r cos(tau) sin(tau)(x_t + sigma_d dF-/dtau)``.

    ``cos_power`` generalises the leading ``cos(tau)``: ``g = cos^p(tau) df-/dtau``. ``p = 1`` is
    the paper's (its weighting ``w = 1 / (sigma_d tan tau)``); any ``p`` keeps the same fixed point
    ``df/dtau = 0`` and changes only how angles are weighted. With ``p = 1`` the tangent vanishes at
    the 1-step angle ``pi/2``; ``p = 0`` (the plain ``df-/dtau``) keeps a signal there, which is
    what the 2-D bench needed to beat the teacher's 4-step sampler at 1 NFE
    (``bench/traj_scm.py``). A departure from the paper: opt in.

    Args:
        x_t: noisy sample ``[B, ...]``.
        dxdt: ``dx_t/dtau``: the teacher's PF-ODE velocity (sCD) or ``cos(tau) z - sin(tau) x0``
            (sCT), same shape.
        F_minus: stop-gradient network output ``F_theta-``, same shape.
        dF_dt: total derivative ``dF_theta-/dtau`` along ``(dx/dtau, 1)``, same shape.
        tau: angle ``[B]``.
        sigma_d: data standard deviation.
        r: tangent warm-up factor in [0, 1] (:func:`tangent_warmup`); 1 is the full tangent.
        cos_power: ``p`` of the leading ``cos^p(tau)`` (paper: 1; must be >= 0).
    """
    check_same_shape(x_t=x_t, dxdt=dxdt, F_minus=F_minus, dF_dt=dF_dt)
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"tangent warm-up r must lie in [0, 1], got {r}")
    if cos_power < 0:
        raise ValueError(f"cos_power must be >= 0 (paper: 1), got {cos_power}")
    cos, sin = _angle(tau, x_t)
    df_dt = -cos * (sigma_d * F_minus - dxdt) - r * sin * (x_t + sigma_d * dF_dt)
    return df_dt * cos if cos_power == 1.0 else df_dt * cos.clamp_min(0.0) ** cos_power


def normalize_tangent(g: Tensor, c: float = 0.1) -> Tensor:
    """Tangent normalisation ``g / (||g|| + c)`` per sample (sec. 4.2; ``c = 0.1`` in the paper).

    ``||g||`` is the L2 norm over every non-batch dim.
    """
    if c <= 0:
        raise ValueError(f"tangent normalisation needs c > 0 (paper: 0.1), got {c}")
    norm = g.flatten(1).norm(dim=1)
    return g / append_dims(norm + c, g.ndim)


def clip_tangent(g: Tensor, bound: float = 1.0) -> Tensor:
    """Tangent clipping, the paper's alternative to normalisation: ``clip(g, -bound, bound)``."""
    if bound <= 0:
        raise ValueError(f"tangent clipping needs bound > 0, got {bound}")
    return g.clamp(-bound, bound)


def tangent_warmup(step: int, warmup_steps: int) -> float:
    """Tangent warm-up ``r = min(1, step / warmup_steps)`` (paper: 10k steps); 1 without warm-up."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, max(0, step) / warmup_steps)


def proposal_angle(log_sigma: Tensor, sigma_d: float) -> Tensor:
    """The sCM time proposal ``tau = arctan(e^{log_sigma} / sigma_d)`` (sec. 4.2).

    ``sigma_d tan(tau)`` is the EDM noise level of ``x_tau / cos(tau)``, so drawing
    ``log_sigma ~ N(P_mean, P_std^2)`` (sCT: -1.0, 1.4; sCD: -0.8, 1.6) gives the EDM log-normal
    in TrigFlow time. Returns ``tau`` in ``(0, pi/2)``.
    """
    return torch.atan(torch.exp(log_sigma) / sigma_d)


def scm_loss(F: Tensor, F_minus: Tensor, g: Tensor, log_weight: Tensor | None = None) -> Tensor:
    """The sCM loss with adaptive weighting (eq. 9): ``e^w / D ||F - F- - g||^2 - w``, ``[B]``.

    Its gradient in ``F`` is ``-2 e^w / D g`` at ``F = F-``: the paper's sCM gradient (see the
    module docstring) times ``2 e^w / D``. ``w = w_phi(tau)`` is a learned per-time log-weight
    that trains on the same loss (its optimum is ``-log`` of the expected residual).

    Args:
        F: network output with gradient ``[B, ...]``.
        F_minus: the same output, detached (``theta-``).
        g: the (normalised) tangent, detached, same shape.
        log_weight: ``w_phi(tau)`` of shape ``[B]``; ``None`` means ``w = 0`` (plain L2).
    """
    check_same_shape(F=F, F_minus=F_minus, g=g)
    if F_minus.requires_grad or g.requires_grad:
        raise ValueError("F_minus and g must be detached (stop-gradient targets); call .detach()")
    residual = mean_flat((F - F_minus - g) ** 2)
    if log_weight is None:
        return residual
    if log_weight.shape != residual.shape:
        raise ValueError(
            f"log_weight must have shape [B] = {tuple(residual.shape)}, "
            f"got {tuple(log_weight.shape)}"
        )
    return torch.exp(log_weight) * residual - log_weight
