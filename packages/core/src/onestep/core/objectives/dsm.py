"""Denoising score matching in ``x0`` form, and the usual weightings as multipliers of the x0-MSE.

Every denoiser in onestep predicts ``x0`` (see :mod:`onestep.core.denoiser`), so one loss,
``weight(t) * mean((x0_pred - x0)^2)``, covers every native parametrisation: the error of an
``eps``, ``v`` or flow-velocity prediction at ``(x_t, t)`` is a per-sample multiple of the ``x0``
error (the prediction is affine in ``x0`` with the same ``x_t``). :func:`dsm_weight` returns that
multiple, and a few popular re-weightings (min-SNR, EDM, sigmoid).

Also home of :func:`mean_flat` and the shape checks the other objectives share.
"""

from __future__ import annotations

import torch
from torch import Tensor

from onestep.core.noise import NoiseProcess

__all__ = ["DSM_WEIGHTS", "dsm_loss", "dsm_weight", "mean_flat"]

DSM_WEIGHTS: tuple[str, ...] = ("x0", "eps", "v", "flow", "min_snr", "edm", "sigmoid")


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every non-batch dim: ``[B, ...] -> [B]``."""
    return x.mean(dim=tuple(range(1, x.ndim))) if x.ndim > 1 else x


def check_same_shape(**tensors: Tensor) -> None:
    """Raise if the named tensors do not all share one shape ``[B, ...]`` with ``B >= 1``."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) == 0 or any(s != first for s in shapes.values()):
        raise ValueError(f"expected tensors of one shape [B, ...], got {shapes}")


def apply_weight(loss: Tensor, weight: Tensor | float | None) -> Tensor:
    """Multiply a per-sample loss ``[B]`` by ``weight`` (``None``: 1; a float; or ``[B]``)."""
    if weight is None:
        return loss
    if isinstance(weight, (int, float)):
        return loss * float(weight)
    if weight.shape != loss.shape:
        raise ValueError(
            f"weight must have shape [B] = {tuple(loss.shape)}, got {tuple(weight.shape)}; "
            "pass one weight per sample (e.g. dsm_weight(process, t))"
        )
    return loss * weight.to(loss.dtype)


def dsm_loss(x0_pred: Tensor, x0: Tensor, weight: Tensor | float | None = None) -> Tensor:
    """Denoising score matching in ``x0`` form (Vincent 2011; Ho et al. 2020, eq. 14 re-weighted).

    ``L[b] = weight[b] * mean_dims((x0_pred - x0)^2)``. With ``weight = dsm_weight(process, t,
    kind)`` it equals the MSE of the ``kind`` parametrisation (see :func:`dsm_weight`).

    Args:
        x0_pred: the denoiser's ``x0`` prediction at ``(x_t, t)``, ``[B, ...]``.
        x0: the clean sample ``x_t`` was made from, same shape.
        weight: per-sample multiplier ``[B]`` (or a float); ``None`` means 1.

    Returns:
        Per-sample loss ``[B]``.
    """
    check_same_shape(x0_pred=x0_pred, x0=x0)
    return apply_weight(mean_flat((x0_pred - x0).square()), weight)


def _snr(process: NoiseProcess, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    alpha, sigma = process.alpha(t), process.sigma(t)
    return alpha, sigma, (alpha / sigma).square()


def dsm_weight(
    process: NoiseProcess,
    t: Tensor,
    kind: str = "x0",
    *,
    gamma: float = 5.0,
    sigma_data: float = 0.5,
    bias: float = 0.0,
) -> Tensor:
    """Per-sample multiplier of the x0-MSE that turns :func:`dsm_loss` into a named loss.

    For ``x_t = alpha x0 + sigma eps`` and a prediction error ``d = x0_pred - x0`` at fixed
    ``x_t`` (``SNR = alpha^2 / sigma^2``, ``alpha' = d alpha / dt``):

    * ``"x0"``: ``1``; plain x0-MSE.
    * ``"eps"``: ``SNR``; ``eps = (x_t - alpha x0) / sigma`` so ``d_eps = -(alpha/sigma) d``
      (the "simple" DDPM loss, Ho et al. 2020, eq. 14).
    * ``"v"``: ``(alpha^2 + sigma^2)^2 / sigma^2``; ``v = alpha eps - sigma x0`` (Salimans & Ho
      2022, sec. 4) gives ``d_v = -((alpha^2 + sigma^2) / sigma) d``; ``1 + SNR`` for VP.
    * ``"flow"``: ``(alpha' - sigma' alpha / sigma)^2``; the velocity ``u = alpha' x0 + sigma'
      eps`` (flow matching, Lipman et al. 2023; rectified flow ``1 / t^2``).
    * ``"min_snr"``: ``min(SNR, gamma)``; Min-SNR-gamma (Hang et al. 2023, x0 form); an
      eps-prediction network trained with it sees ``min(SNR, gamma) / SNR`` on its eps-MSE.
    * ``"edm"``: ``(s^2 + sigma_data^2) / (s sigma_data)^2`` with ``s = sigma / alpha``
      (Karras et al. 2022, eq. 8 / Table 1 ``lambda(sigma)``; ``x_t / alpha = x0 + s eps``).
    * ``"sigmoid"``: ``SNR * sigmoid(bias - log SNR)``; the sigmoid weighting of the eps loss
      (Kingma & Gao 2023, "Understanding Diffusion Objectives").

    Args:
        process: the noise process ``x_t`` was made with.
        t: diffusion times ``[B]`` in [0, 1].
        kind: one of :data:`DSM_WEIGHTS`.
        gamma: the Min-SNR clip.
        sigma_data: the data standard deviation of the EDM weighting.
        bias: the sigmoid weighting's shift ``b``.

    Returns:
        ``[B]`` weights (not detached; ``t`` rarely needs grad).
    """
    if t.ndim != 1:
        raise ValueError(f"t must have shape [B], got {tuple(t.shape)}")
    alpha, sigma, snr = _snr(process, t)
    if kind == "x0":
        return torch.ones_like(t)
    if kind == "eps":
        return snr
    if kind == "v":
        return (alpha.square() + sigma.square()).square() / sigma.square()
    if kind == "flow":
        return (process.d_alpha(t) - process.d_sigma(t) * alpha / sigma).square()
    if kind == "min_snr":
        return snr.clamp(max=gamma)
    if kind == "edm":
        s = sigma / alpha
        return (s.square() + sigma_data**2) / (s * sigma_data).square()
    if kind == "sigmoid":
        return snr * torch.sigmoid(bias - torch.log(snr))
    raise ValueError(f"unknown DSM weighting {kind!r}; use one of {DSM_WEIGHTS}")
