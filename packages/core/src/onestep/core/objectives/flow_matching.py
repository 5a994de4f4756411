"""Rectified-flow objectives: flow matching, reflow, RF++'s LPIPS-Huber, one-step distillation.

Conventions are onestep's (``t = 0`` data, ``t = 1`` noise) with the rectified-flow process
``x_t = (1 - t) x0 + t eps`` (:func:`onestep.core.noise.flow`), whose ODE velocity is
``dx_t / dt = eps - x0``; a sampler integrates it from ``t = 1`` down to ``t = 0``. Liu et al.
write the same path with time reversed (``X_t = t X_1 + (1 - t) X_0``, ``X_0`` noise); the losses
are identical.

Reflow is flow matching on a *coupling* ``(eps, x0 = ODE(eps))`` from a trained flow instead of an
independent pair, so it reuses :func:`flow_matching_loss`; InstaFlow's and Luhman & Luhman's
one-step distillation regress the ODE sample itself (:func:`distillation_loss`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from onestep.core.noise import append_dims
from onestep.core.objectives.distances import DISTANCES, distance
from onestep.core.objectives.dsm import apply_weight, check_same_shape

__all__ = [
    "PerceptualFn",
    "distillation_loss",
    "flow_matching_loss",
    "lpips_huber_loss",
    "straight_interpolation",
    "straight_velocity",
]

# A perceptual distance (e.g. LPIPS) between two batches: (a, b) -> [B].
PerceptualFn = Callable[[Tensor, Tensor], Tensor]


def straight_interpolation(x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """The straight path ``x_t = (1 - t) x0 + t eps`` (Liu et al. 2023, eq. 1; ``t``: ``[B]``)."""
    check_same_shape(x0=x0, eps=eps)
    t = append_dims(t, x0.ndim).to(x0.dtype)
    return (1 - t) * x0 + t * eps


def straight_velocity(x0: Tensor, eps: Tensor) -> Tensor:
    """The straight path's constant velocity ``d x_t / dt = eps - x0`` (the regression target)."""
    check_same_shape(x0=x0, eps=eps)
    return eps - x0


def _check_distance(name: str) -> None:
    if name not in DISTANCES:
        raise ValueError(f"unknown distance {name!r}; use one of {DISTANCES}")


def flow_matching_loss(
    v_pred: Tensor,
    x0: Tensor,
    eps: Tensor,
    *,
    metric: str = "l2",
    c: float | None = None,
    weight: Tensor | float | None = None,
) -> Tensor:
    """Rectified flow / conditional flow matching loss, per sample.

    Liu et al. 2023 ("Flow Straight and Fast"), eq. 1; Lipman et al. 2023, eq. 23 with
    ``sigma_min = 0``: ``L[b] = weight[b] * d(v_pred, eps - x0)`` for the velocity ``v_pred``
    predicted at ``x_t = (1 - t) x0 + t eps``. With ``(eps, x0)`` drawn from the teacher's ODE
    (:func:`onestep.core.sampling.ode_pairs`) this is the reflow loss (Liu et al. 2023, eq. 6);
    RF++ (Lee et al. 2024, sec. 4.2) replaces ``d`` by the pseudo-Huber distance.

    Args:
        v_pred: predicted velocity at ``(x_t, t)``, ``[B, ...]``.
        x0: data end of the pair, same shape.
        eps: noise end of the pair, same shape.
        metric: ``"l2"`` (mean squared error over elements) or ``"pseudo_huber"`` (on the norm
            of the whole sample, scale ``c``).
        c: pseudo-Huber scale; default :func:`~onestep.core.objectives.ict_huber_c`.
        weight: per-sample multiplier ``[B]`` (or a float); ``None`` means 1.

    Returns:
        Per-sample loss ``[B]``.
    """
    check_same_shape(v_pred=v_pred, x0=x0, eps=eps)
    _check_distance(metric)
    return apply_weight(distance(metric, v_pred, straight_velocity(x0, eps), c), weight)


def lpips_huber_loss(
    v_pred: Tensor,
    x0: Tensor,
    eps: Tensor,
    t: Tensor,
    perceptual: PerceptualFn,
    c: float | None = None,
) -> Tensor:
    """RF++'s LPIPS-Huber premetric (Lee et al. 2024, sec. 4.2), per sample.

    ``L[b] = (1 - t) * pseudo_huber(v_pred, eps - x0) + perceptual(x0_hat, x0)`` with
    ``x0_hat = x_t - t v_pred`` the data end the predicted velocity points to from
    ``x_t = (1 - t) x0 + t eps``. The perceptual term needs a sample-space input, hence
    ``x0_hat``; the Huber weight ``1 - t`` (onestep's time: largest near the data) is our reading
    of the paper's weighting, which hands most of the loss to the perceptual term near the noise.
    Any callable ``(a, b) -> [B]`` serves as ``perceptual`` (LPIPS on images; a test passes a
    closed form), so no LPIPS weights are needed here.

    Args:
        v_pred: predicted velocity at ``(x_t, t)``, ``[B, ...]``.
        x0: data end of the pair, same shape.
        eps: noise end of the pair, same shape.
        t: times ``[B]`` in [0, 1].
        perceptual: distance ``(a, b) -> [B]``, e.g. LPIPS.
        c: pseudo-Huber scale; default :func:`~onestep.core.objectives.ict_huber_c`.

    Returns:
        Per-sample loss ``[B]``.
    """
    check_same_shape(v_pred=v_pred, x0=x0, eps=eps)
    if t.shape != (x0.shape[0],):
        raise ValueError(f"t must have shape [B] = [{x0.shape[0]}], got {tuple(t.shape)}")
    x0_hat = straight_interpolation(x0, eps, t) - append_dims(t, x0.ndim).to(x0.dtype) * v_pred
    huber = distance("pseudo_huber", v_pred, straight_velocity(x0, eps), c)
    return (1 - t.to(huber.dtype)) * huber + _perceptual(perceptual, x0_hat, x0)


def _perceptual(perceptual: PerceptualFn, a: Tensor, b: Tensor) -> Tensor:
    out = perceptual(a, b).reshape(-1)
    if out.shape != (a.shape[0],):
        raise ValueError(
            f"perceptual distance must return [B] = [{a.shape[0]}], got {tuple(out.shape)}; "
            "reduce it per sample (no batch mean)"
        )
    return out


def distillation_loss(
    x_pred: Tensor,
    x_target: Tensor,
    *,
    metric: str = "l2",
    c: float | None = None,
    perceptual: PerceptualFn | None = None,
) -> Tensor:
    """One-step distillation from ODE pairs, per sample.

    Knowledge distillation (Luhman & Luhman 2021, eq. 6: ``|| G(z) - ODE(z) ||^2``) and
    InstaFlow's distillation stage (Liu et al. 2024, eq. 4: ``D(z - v(z, 1), ODE_v(z))`` with an
    L2 or LPIPS distance ``D``) regress the student's one-step sample on the ODE sample from the
    same noise.

    Args:
        x_pred: the student's sample ``G(z)``, ``[B, ...]``.
        x_target: the ODE sample from the same ``z``, same shape.
        metric: ``"l2"`` or ``"pseudo_huber"``.
        c: pseudo-Huber scale; default :func:`~onestep.core.objectives.ict_huber_c`.
        perceptual: optional distance ``(a, b) -> [B]`` (e.g. LPIPS) added to ``metric``.

    Returns:
        Per-sample loss ``[B]``.
    """
    check_same_shape(x_pred=x_pred, x_target=x_target)
    _check_distance(metric)
    loss = distance(metric, x_pred, x_target, c)
    if perceptual is not None:
        loss = loss + _perceptual(perceptual, x_pred, x_target)
    return loss
