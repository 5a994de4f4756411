"""Distribution-matching student objectives: DMD, VSD, SiD, SIM and f-divergence weights.

All are written with ``x0`` predictions. For ``x_t = alpha x + sigma eps`` the teacher's and the
fake score's scores at ``x_t`` differ by (Tweedie)

    s_real - s_fake = (alpha / sigma^2) (x0_real - x0_fake),

so every score difference below is an ``x0`` difference times a per-sample factor that the
method folds into ``weight``. Shapes: ``x``, ``x0_real``, ``x0_fake`` are ``[B, ...]``; every loss
returns ``[B]``, reduced by the mean over the non-batch dims (``numel = prod(shape[1:])``).

Which tensors carry gradient differs by method, on purpose:

* :func:`dmd_loss`, :func:`vsd_loss`: ``x0_real`` and ``x0_fake`` are detached inside; only ``x``
  (the student sample) receives the gradient, through a surrogate ``0.5 ||x - sg(x - g)||^2``.
* :func:`sid_loss`, :func:`sim_loss`: nothing is detached; the method passes predictions made at an
  ``x_t`` built from the student sample with grad, and the gradient flows through the networks'
  inputs as the papers prescribe.
"""

from __future__ import annotations

import torch
from torch import Tensor

from onestep.core.objectives.dsm import apply_weight, check_same_shape, mean_flat

__all__ = [
    "FDIVERGENCES",
    "dmd_loss",
    "dmd_normalizer",
    "fdiv_weight",
    "sid_loss",
    "sim_loss",
    "vsd_loss",
]

FDIVERGENCES: tuple[str, ...] = ("rkl", "fkl", "js", "sh", "jf")


def _surrogate(x: Tensor, grad: Tensor) -> Tensor:
    """``0.5 mean_dims((x - sg(x - grad))^2)``: its gradient w.r.t. ``x`` is ``grad / numel``."""
    return 0.5 * mean_flat((x - (x - grad).detach()).square())


def dmd_normalizer(x: Tensor, x0_real: Tensor, eps: float = 1e-6) -> Tensor:
    """DMD's per-sample weight ``1 / (mean_dims|x - x0_real| + eps)`` (Yin et al. 2024a, eq. 8).

    Detached; ``[B]``. Also the weight SiD uses for its generator loss (Zhou et al. 2024, sec. 4).
    """
    check_same_shape(x=x, x0_real=x0_real)
    return 1.0 / (mean_flat((x - x0_real).abs()).detach() + eps)


def dmd_loss(
    x: Tensor,
    x0_real: Tensor,
    x0_fake: Tensor,
    eps: float = 1e-6,
    *,
    weight: Tensor | float | None = None,
) -> Tensor:
    """Distribution-matching student loss (DMD, Yin et al. 2024a, eq. 7-8; DMD2, Yin et al. 2024b).

    The reverse-KL gradient ``E[(s_fake - s_real) dx_t/dx]`` in ``x0`` units with eq. 8's
    normaliser ``1 / mean|x - x0_real|`` standing in for ``sigma^2 / alpha``:
    ``g = (x0_fake - x0_real) / (mean_dims|x - x0_real| + eps)``, applied through the surrogate
    ``0.5 mean_dims((x - sg(x - g))^2)``. Gradient descent moves ``x`` from the fake toward the
    real ``x0``.

    Args:
        x: student samples that require grad, ``[B, ...]``.
        x0_real: teacher's ``x0`` prediction at the noised ``x`` (detached here), same shape.
        x0_fake: fake score's ``x0`` prediction at the noised ``x`` (detached here), same shape.
        eps: guards the normaliser against division by zero.
        weight: extra per-sample factor ``[B]`` (e.g. :func:`fdiv_weight`); ``None`` means 1.

    Returns:
        ``[B]``; its gradient w.r.t. ``x`` is ``weight * g / numel`` per sample.
    """
    check_same_shape(x=x, x0_real=x0_real, x0_fake=x0_fake)
    dims = tuple(range(1, x.ndim))
    with torch.no_grad():
        norm = (x - x0_real).abs().mean(dim=dims, keepdim=True) + eps
        grad = torch.nan_to_num((x0_fake - x0_real) / norm)
    return apply_weight(_surrogate(x, grad), weight)


def vsd_loss(
    x: Tensor, x0_real: Tensor, x0_fake: Tensor, weight: Tensor | float | None = None
) -> Tensor:
    """Variational score distillation (ProlificDreamer, Wang et al. 2023, eq. 9; SwiftBrush).

    The same direction as :func:`dmd_loss` with the paper's time weighting instead of DMD's
    normaliser: gradient ``weight * (x0_fake - x0_real) / numel`` w.r.t. ``x``.

    Relation to the paper's eps form. Eq. 9 reads ``w(t) (eps_real - eps_fake) dx/dtheta``; since
    ``eps = (x_t - alpha x0) / sigma``, ``eps_real - eps_fake = (alpha / sigma)(x0_fake -
    x0_real)``, so an eps-space weight ``w(t)`` is ``weight = w(t) alpha / sigma`` here. The exact
    reverse-KL gradient ``E[(s_fake - s_real) alpha dx/dtheta]`` (``dx_t/dx = alpha``) is
    ``weight = alpha^2 / sigma^2 = SNR`` (``dsm_weight(process, t, "eps")``), i.e. ``w(t) = alpha
    / sigma``; ProlificDreamer's usual ``w(t) = sigma^2`` gives ``weight = alpha sigma``.

    Args:
        x: student samples that require grad, ``[B, ...]``.
        x0_real: teacher's ``x0`` prediction at the noised ``x`` (detached here), same shape.
        x0_fake: fake score's ``x0`` prediction at the noised ``x`` (detached here), same shape.
        weight: per-sample ``[B]`` (or float) weight in ``x0`` units; ``None`` means 1.

    Returns:
        ``[B]``; gradient w.r.t. ``x`` is ``weight * (x0_fake - x0_real) / numel``.
    """
    check_same_shape(x=x, x0_real=x0_real, x0_fake=x0_fake)
    grad = torch.nan_to_num(x0_fake.detach() - x0_real.detach())
    return apply_weight(_surrogate(x, grad), weight)


def sid_loss(
    x: Tensor,
    x0_real: Tensor,
    x0_fake: Tensor,
    alpha: float = 1.2,
    weight: Tensor | float | None = None,
) -> Tensor:
    """Score identity Distillation generator loss (SiD, Zhou et al. 2024, ICML).

    ``L = weight * [(1 - alpha) mean(||x0_real - x0_fake||^2)
    + mean((x0_real - x0_fake) * (x0_fake - x))]``,
    equivalently ``mean((x0_real - x0_fake) * ((x0_real - x) - alpha (x0_real - x0_fake)))``, the
    form of the authors' ``generator_loss`` (their weight: :func:`dmd_normalizer`, detached).
    ``alpha = 1`` drops the squared term (the plain model-based Fisher-divergence surrogate);
    the paper's default ``alpha = 1.2`` subtracts a share of it.

    Nothing is detached: ``x0_real`` and ``x0_fake`` must come from networks evaluated at an
    ``x_t = alpha_t x + sigma_t eps`` built from the student's ``x`` with grad, so the gradient
    flows through the networks' inputs as well as through ``x``.

    Args:
        x: student samples, ``[B, ...]``.
        x0_real: teacher's ``x0`` prediction at the noised ``x``, same shape.
        x0_fake: fake score's ``x0`` prediction at the noised ``x``, same shape.
        alpha: SiD's ``alpha`` (1.2 in the paper).
        weight: per-sample ``[B]`` (or float); ``None`` means 1.

    Returns:
        Per-sample loss ``[B]``.
    """
    check_same_shape(x=x, x0_real=x0_real, x0_fake=x0_fake)
    diff = x0_real - x0_fake
    loss = (1.0 - alpha) * mean_flat(diff.square()) + mean_flat(diff * (x0_fake - x))
    return apply_weight(loss, weight)


def sim_loss(
    x: Tensor,
    x0_real: Tensor,
    x0_fake: Tensor,
    c: float = 1.0,
    weight: Tensor | float | None = None,
) -> Tensor:
    """Score Implicit Matching generator loss, pseudo-Huber distance (SIM, Luo et al. 2024).

    SIM minimises ``int w(t) E d(s_fake(x_t) - s_real(x_t)) dt`` with ``d(y) = sqrt(||y||^2 + c^2)
    - c``; its score-divergence gradient theorem (and Algorithm 1) gives the tractable
    generator loss ``-d'(y)^T (s_fake(x_t) - grad log q_t(x_t | x))`` with ``y = s_fake - s_real``
    and ``d'(y) = y / sqrt(||y||^2 + c^2)``. In ``x0`` units (``s_fake - s_real = -k u``,
    ``s_fake - grad log q_t(x_t | x) = k (x0_fake - x)``, ``k = alpha / sigma^2``,
    ``u = x0_real - x0_fake``) this is

        L = weight * mean(u * (x0_fake - x)) / sqrt(mean(u^2) + c^2).

    Interpretation (stated, since only inference code is public): the norms are RMS over the
    non-batch dims, so ``c`` is per element; this equals the paper's sum form with
    ``c_paper = c sqrt(numel)`` up to the factor ``1/sqrt(numel)``. The scale ``k`` (and ``k^2``)
    is folded into ``weight``. As in :func:`sid_loss`, nothing is detached: the gradient flows
    through ``x`` and through the predictions (networks evaluated at an ``x_t`` built from ``x``
    with grad). For ``c -> inf`` the loss tends to SiD's with ``alpha = 1`` divided by ``c``.

    Args:
        x: student samples, ``[B, ...]``.
        x0_real: teacher's ``x0`` prediction at the noised ``x``, same shape.
        x0_fake: fake score's ``x0`` prediction at the noised ``x``, same shape.
        c: pseudo-Huber scale (> 0), in ``x0`` units per element.
        weight: per-sample ``[B]`` (or float); ``None`` means 1.

    Returns:
        Per-sample loss ``[B]``.
    """
    if c <= 0:
        raise ValueError(f"sim_loss needs a pseudo-Huber scale c > 0, got {c}")
    check_same_shape(x=x, x0_real=x0_real, x0_fake=x0_fake)
    u = x0_real - x0_fake
    loss = mean_flat(u * (x0_fake - x)) / torch.sqrt(mean_flat(u.square()) + c**2)
    return apply_weight(loss, weight)


def _h(log_ratio: Tensor, divergence: str) -> Tensor:
    if divergence == "rkl":  # f = -log r
        return torch.ones_like(log_ratio)
    if divergence == "fkl":  # f = r log r
        return torch.exp(log_ratio)
    if divergence == "js":  # f = r log r - (r + 1) log((r + 1) / 2)
        return torch.sigmoid(log_ratio)
    if divergence == "sh":  # f = (sqrt(r) - 1)^2
        return 0.5 * torch.exp(0.5 * log_ratio)
    if divergence == "jf":  # f = (r - 1) log r
        return 1.0 + torch.exp(log_ratio)
    raise ValueError(f"unknown f-divergence {divergence!r}; use one of {FDIVERGENCES}")


def fdiv_weight(
    log_ratio: Tensor,
    divergence: str,
    normalize: bool = True,
    *,
    log_ratio_range: tuple[float, float] | None = None,
) -> Tensor:
    """f-divergence weight ``h(r) = r^2 f''(r)`` (f-distill, Xu et al. 2025).

    The gradient of ``D_f(p_teacher || p_student) = E_student f(r)``, ``r = p_teacher /
    p_student``, is the reverse-KL (DMD/VSD) gradient re-weighted per sample by ``h(r)``; pass
    the result as ``weight`` to :func:`dmd_loss` or :func:`vsd_loss`. ``r`` is estimated as
    ``exp(log_ratio)``, e.g. the logit of a real-vs-fake discriminator (optimal logit ``= log r``).

    ============  =====================================  ================
    name          ``f(r)``                               ``h(r)``
    ============  =====================================  ================
    ``"rkl"``     ``-log r`` (reverse KL, DMD)           ``1``
    ``"fkl"``     ``r log r`` (forward KL)               ``r``
    ``"js"``      ``r log r - (r+1) log((r+1)/2)``       ``r / (r + 1)``
    ``"sh"``      ``(sqrt(r) - 1)^2`` (sq. Hellinger)    ``sqrt(r) / 2``
    ``"jf"``      ``(r - 1) log r`` (Jeffreys)           ``r + 1``
    ============  =====================================  ================

    Constant factors in ``f`` (some write JS with a 1/2) only rescale ``h`` and vanish under
    ``normalize``.

    Args:
        log_ratio: ``log r`` per sample, ``[B]``.
        divergence: one of :data:`FDIVERGENCES`.
        normalize: divide by the batch mean so the weights average 1 (f-distill's stabiliser).
        log_ratio_range: optional ``(lo, hi)`` clamp of ``log r`` before weighting.

    Returns:
        Detached weights ``[B]``.
    """
    if log_ratio.ndim != 1:
        raise ValueError(f"log_ratio must be [B], got {tuple(log_ratio.shape)}")
    log_ratio = log_ratio.detach()
    if log_ratio_range is not None:
        log_ratio = log_ratio.clamp(*log_ratio_range)
    h = _h(log_ratio, divergence)
    if normalize:
        h = h / h.mean().clamp_min(torch.finfo(h.dtype).tiny)
    return h
