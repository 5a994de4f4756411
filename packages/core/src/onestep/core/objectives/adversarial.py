"""Adversarial objectives: non-saturating and hinge GAN losses, R1 penalty.

Logits may be ``[B]`` (one per sample) or ``[B, ...]`` (patch discriminators); extra dims are
averaged, so every function returns ``[B]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from onestep.core.objectives.dsm import mean_flat

__all__ = ["GAN_KINDS", "gan_discriminator_loss", "gan_generator_loss", "r1_penalty"]

GAN_KINDS: tuple[str, ...] = ("ns", "hinge")


def _check(kind: str, *logits: Tensor) -> None:
    if kind not in GAN_KINDS:
        raise ValueError(f"unknown GAN loss {kind!r}; use one of {GAN_KINDS}")
    for x in logits:
        if x.ndim == 0:
            raise ValueError("logits must be [B] or [B, ...], got a scalar")


def gan_generator_loss(logits_fake: Tensor, kind: str = "ns") -> Tensor:
    """Generator loss on the discriminator's logits for generated samples.

    * ``"ns"``: non-saturating ``softplus(-D(G(z))) = -log sigmoid(D(G(z)))`` (Goodfellow et al.
      2014, sec. 3); gradient w.r.t. a logit ``l`` is ``-sigmoid(-l)``.
    * ``"hinge"``: ``-D(G(z))`` (Lim & Ye 2017; Miyato et al. 2018, eq. 17).

    Args:
        logits_fake: ``[B]`` or ``[B, ...]`` logits of generated samples.
        kind: ``"ns"`` or ``"hinge"``.

    Returns:
        Per-sample loss ``[B]`` (mean over patch dims).
    """
    _check(kind, logits_fake)
    loss = F.softplus(-logits_fake) if kind == "ns" else -logits_fake
    return mean_flat(loss)


def gan_discriminator_loss(logits_real: Tensor, logits_fake: Tensor, kind: str = "ns") -> Tensor:
    """Discriminator loss on paired real and generated batches.

    * ``"ns"``: ``softplus(-D(x)) + softplus(D(G(z)))``, the binary cross-entropy of real = 1,
      fake = 0 (Goodfellow et al. 2014, eq. 1).
    * ``"hinge"``: ``relu(1 - D(x)) + relu(1 + D(G(z)))`` (Lim & Ye 2017; Miyato et al. 2018,
      eq. 16): samples beyond the margin give no gradient.

    Args:
        logits_real: ``[B]`` or ``[B, ...]`` logits of real samples.
        logits_fake: logits of generated samples, same shape.
        kind: ``"ns"`` or ``"hinge"``.

    Returns:
        Per-sample loss ``[B]`` (sample ``b`` pairs ``logits_real[b]`` with ``logits_fake[b]``).
    """
    _check(kind, logits_real, logits_fake)
    if logits_real.shape != logits_fake.shape:
        raise ValueError(
            f"real and fake logits must match for a per-sample loss, got "
            f"{tuple(logits_real.shape)} and {tuple(logits_fake.shape)}; use equal batch sizes"
        )
    if kind == "ns":
        return mean_flat(F.softplus(-logits_real)) + mean_flat(F.softplus(logits_fake))
    return mean_flat(F.relu(1 - logits_real)) + mean_flat(F.relu(1 + logits_fake))


def r1_penalty(logits_real: Tensor, x_real: Tensor) -> Tensor:
    """R1 gradient penalty ``||d D(x) / d x||^2`` on real samples (Mescheder et al. 2018, eq. 9).

    Patch logits are first averaged to one logit per sample (the quantity the GAN losses use).
    The gradient is taken of the batch sum, which is the per-sample gradient as long as the
    discriminator treats samples independently (no batch norm). Built with ``create_graph=True``,
    so the penalty trains the discriminator. Multiply by ``gamma / 2`` as in the paper.

    Args:
        logits_real: ``[B]`` or ``[B, ...]`` logits computed from ``x_real``.
        x_real: the real batch ``[B, ...]``; must require grad before the discriminator call.

    Returns:
        ``[B]``: squared gradient norm (sum over the non-batch dims of ``x_real``).
    """
    if not x_real.requires_grad:
        raise ValueError(
            "r1_penalty needs x_real.requires_grad; call x_real.requires_grad_(True) before "
            "computing the discriminator's logits"
        )
    if logits_real.ndim == 0 or logits_real.shape[0] != x_real.shape[0]:
        raise ValueError(
            f"logits_real must be [B, ...] with B = {x_real.shape[0]}, "
            f"got {tuple(logits_real.shape)}"
        )
    (grad,) = torch.autograd.grad(mean_flat(logits_real).sum(), x_real, create_graph=True)
    sq = grad.square()
    return sq.sum(dim=tuple(range(1, sq.ndim))) if sq.ndim > 1 else sq
