"""Consistency models: boundary-preserving scalings, time grids, curricula and the loss.

Consistency distillation (CD) and training (CT), Song et al. 2023; improved CT (iCT), Song &
Dhariwal 2023; latent consistency models (LCM), Luo et al. 2023; trajectory segmented consistency
distillation (TSCD, Hyper-SD), Ren et al. 2024. Pure functions, tensors in, tensors out; the
networks are called by :mod:`onestep.core.methods.consistency`.

Noise levels are EDM ones, ``r(t) = sigma(t) / alpha(t)`` (the ``sigma`` of Karras et al. 2022 for
``x / alpha``), so one set of formulas serves every :class:`~onestep.core.noise.NoiseProcess`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from onestep.core.noise import NoiseProcess
from onestep.core.objectives.distances import distance
from onestep.core.objectives.dsm import check_same_shape

__all__ = [
    "consistency_loss",
    "consistency_scalings",
    "ct_pair",
    "edm_noise_level",
    "ict_num_scales",
    "ict_time_probs",
    "ict_weight",
    "karras_sigmas",
    "segment_lower_edge",
    "segment_schedule",
]


def edm_noise_level(process: NoiseProcess, t: Tensor) -> Tensor:
    """``r(t) = sigma(t) / alpha(t)`` (``inf`` where ``alpha = 0``, e.g. rectified flow at 1)."""
    return process.sigma(t) / process.alpha(t)


def consistency_scalings(
    r: Tensor, r_min: Tensor | float, sigma_data: float
) -> tuple[Tensor, Tensor]:
    """``c_skip``, ``c_out`` of a consistency function (Song et al. 2023, Appendix C).

    ``f(x_t, t) = c_skip x_t + c_out F(x_t, t)`` with ``F`` an ``x0`` prediction and, for
    ``delta = r - r_min``::

        c_skip = sigma_d^2 / (delta^2 + sigma_d^2),   c_out = delta / sqrt(delta^2 + sigma_d^2)

    Shifted by ``r_min`` so that ``c_skip = 1`` and ``c_out = 0`` **exactly** at ``r = r_min``
    (the boundary condition ``f(x, t_min) = x``). ``c_out`` tends to 1 (not ``sigma_d``, as for a
    raw network in the paper) because ``F`` is already in ``x0`` units; ``c_out`` is written as
    ``1 / sqrt(1 + (sigma_d / delta)^2)`` so ``r = inf`` gives ``c_skip = 0``, ``c_out = 1``.
    Levels below ``r_min`` count as ``r_min``.

    Args:
        r: EDM noise levels ``[B]`` (see :func:`edm_noise_level`).
        r_min: the level of the boundary time ``t_min``.
        sigma_data: data standard deviation ``sigma_d`` (> 0; 0.5 for images in [-1, 1]).

    Returns:
        ``(c_skip, c_out)``, each like ``r``.
    """
    if sigma_data <= 0:
        raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
    delta = (r - r_min).clamp_min(0)
    c_skip = sigma_data**2 / (delta**2 + sigma_data**2)
    c_out = torch.rsqrt(1 + (sigma_data / delta) ** 2)
    return c_skip, c_out


def consistency_loss(
    f_online: Tensor,
    f_target: Tensor,
    weight: Tensor | None = None,
    distance_name: str = "l2",
    c: float | None = None,
) -> Tensor:
    """``lambda(t_n) d(f_theta(x_{t_{n+k}}, t_{n+k}), f_{theta^-}(x_hat_{t_n}, t_n))``, ``[B]``.

    Song et al. 2023, eq. 7 (CD) and eq. 10 (CT); iCT (Song & Dhariwal 2023, eq. 9) uses the
    pseudo-Huber distance and ``lambda = 1 / (sigma_{n+1} - sigma_n)``. The target is detached
    here, so the gradient reaches only the online network (stop-gradient, as the paper's
    ``theta^-``).

    Args:
        f_online: the student at the later time, with gradient, ``[B, ...]``.
        f_target: the target network at the earlier time, same shape.
        weight: ``lambda`` per sample ``[B]`` (``None``: 1).
        distance_name: ``"l2"`` (mean squared error) or ``"pseudo_huber"``.
        c: pseudo-Huber scale (default: iCT's ``0.00054 sqrt(d)``).
    """
    check_same_shape(f_online=f_online, f_target=f_target)
    loss = distance(distance_name, f_online, f_target.detach(), c)
    return loss if weight is None else loss * weight


def ict_weight(r_next: Tensor, r_cur: Tensor) -> Tensor:
    """Loss weight of improved CT, ``lambda(sigma_n) = 1 / (sigma_{n+1} - sigma_n)`` (sec. 3.4)."""
    gap = r_next - r_cur
    if bool((gap <= 0).any()):
        raise ValueError("ict_weight needs r_next > r_cur for every sample")
    return 1.0 / gap


def karras_sigmas(
    n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> Tensor:
    """``n`` noise levels, increasing (Karras et al. 2022, eq. 5; CM's discretisation).

    ``sigma_i = (sigma_min^(1/rho) + i/(n-1) (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho``.
    """
    if n < 2:
        raise ValueError(f"karras_sigmas needs n >= 2, got {n}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return ((lo + ramp * (hi - lo)) ** rho).float()


def ict_num_scales(step: int, total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """Improved CT's curriculum ``N(k) = min(s0 2^floor(k / K'), s1) + 1`` (sec. 3.3).

    ``K' = floor(K / (log2(s1 / s0) + 1))`` for ``K = total_steps``: ``N`` doubles at equal
    intervals from ``s0 + 1`` to ``s1 + 1``. Returns the number of grid points.
    """
    if not 0 < s0 <= s1 or total_steps < 1:
        raise ValueError(f"need 0 < s0 <= s1 and total_steps >= 1, got {s0}, {s1}, {total_steps}")
    k_prime = max(1, math.floor(total_steps / (math.log2(s1 / s0) + 1)))
    return min(s0 * 2 ** (step // k_prime), s1) + 1


def ict_time_probs(sigmas: Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> Tensor:
    """Improved CT's discrete lognormal distribution over the intervals of ``sigmas`` (sec. 3.5).

    ``p(sigma_i) ∝ erf((ln sigma_{i+1} - P_mean) / (sqrt2 P_std))
    - erf((ln sigma_i - P_mean) / (sqrt2 P_std))`` for ``i = 0 .. N-2``.

    Returns:
        Probabilities ``[len(sigmas) - 1]`` summing to 1.
    """
    z = (torch.log(sigmas.double()) - p_mean) / (math.sqrt(2) * p_std)
    mass = torch.erf(z[1:]) - torch.erf(z[:-1])
    return (mass / mass.sum()).to(sigmas.dtype)


def ct_pair(
    x0: Tensor, eps: Tensor, process: NoiseProcess, t_cur: Tensor, t_next: Tensor
) -> tuple[Tensor, Tensor]:
    """Consistency training's pair from one ``(x0, eps)`` (Song et al. 2023, eq. 10).

    The unbiased one-sample estimate of the ODE step: ``x_{t_n} = alpha_n x0 + sigma_n eps`` and
    ``x_{t_{n+1}} = alpha_{n+1} x0 + sigma_{n+1} eps`` share ``x0`` and ``eps``.

    Returns:
        ``(x_next, x_cur)``: the online network's input and the target network's.
    """
    return process.add_noise(x0, eps, t_next), process.add_noise(x0, eps, t_cur)


def segment_lower_edge(t: Tensor, segments: int, t_min: float = 0.0) -> Tensor:
    """The lower edge of the TSCD segment holding each ``t`` (Hyper-SD, Ren et al. 2024, sec. 3.1).

    ``[t_min, 1]`` is split into ``segments`` equal pieces; within a piece the consistency target
    is the piece's lower edge, so one segment gives plain CD (edge ``t_min``). A ``t`` on an
    inner edge belongs to the segment below it (its own edge would be itself).
    """
    if segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}")
    width = (1.0 - t_min) / segments
    idx = torch.ceil((t - t_min) / width - 1e-6).clamp(1, segments) - 1
    return t_min + idx * width


def segment_schedule(step: int, total_steps: int, stages: tuple[int, ...] = (8, 4, 2, 1)) -> int:
    """Hyper-SD's progressive segment count (``8 -> 4 -> 2 -> 1``) at ``step`` of ``total_steps``.

    Each stage runs for an equal share of training.
    """
    if not stages or total_steps < 1:
        raise ValueError(f"need stages and total_steps >= 1, got {stages}, {total_steps}")
    i = min(len(stages) - 1, step * len(stages) // total_steps)
    return stages[i]
