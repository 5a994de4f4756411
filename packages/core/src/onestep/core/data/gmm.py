"""Gaussian mixtures with an exact (analytic) teacher.

A mixture ``p(x0) = sum_k w_k N(x0; mu_k, s_k^2 I)`` noised by an affine process
``x_t = alpha x0 + sigma eps`` stays a mixture,
``p_t(x_t) = sum_k w_k N(x_t; alpha mu_k, (alpha^2 s_k^2 + sigma^2) I)``, so the ideal
denoiser ``E[x0 | x_t]`` and the score ``grad log p_t`` are known in closed form.
:class:`GMMDenoiser` is that ideal teacher: every distillation objective can be checked against
it on a CPU in seconds.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from onestep.core.denoiser import DenoiserBase
from onestep.core.noise import NoiseProcess

__all__ = ["GMMDenoiser", "GaussianMixture"]


def _as_float(x: Tensor) -> Tensor:
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _check_means(means: Tensor) -> Tensor:
    means = _as_float(torch.as_tensor(means))
    if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
        raise ValueError(
            f"means must have shape [K, D] with K, D >= 1, got {tuple(means.shape)}; "
            "for 1-d data pass means[:, None]"
        )
    if not bool(torch.isfinite(means).all()):
        raise ValueError("means contain NaN or inf")
    return means


def _check_stds(std: float | Tensor, k: int, like: Tensor) -> Tensor:
    stds = torch.as_tensor(std, dtype=like.dtype, device=like.device)
    if stds.ndim == 0:
        stds = stds.expand(k).clone()
    if stds.shape != (k,):
        raise ValueError(f"std must be a float or a [K] = [{k}] tensor, got {tuple(stds.shape)}")
    if not bool((torch.isfinite(stds) & (stds > 0)).all()):
        raise ValueError(f"every std must be finite and > 0, got {stds.tolist()}")
    return stds


def _check_weights(weights: Tensor | None, k: int, like: Tensor) -> Tensor:
    if weights is None:
        return torch.full((k,), 1.0 / k, dtype=like.dtype, device=like.device)
    w = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    if w.shape != (k,):
        raise ValueError(f"weights must have shape [K] = [{k}], got {tuple(w.shape)}")
    if not bool((torch.isfinite(w) & (w > 0)).all()):
        raise ValueError(
            f"weights must be finite and > 0, got {w.tolist()}; drop zero-weight components"
        )
    return w / w.sum()


class GaussianMixture:
    """Isotropic Gaussian mixture ``p(x) = sum_k w_k N(x; mu_k, s_k^2 I)`` in any dimension ``D``.

    Args:
        means: component means ``mu_k``, ``[K, D]``.
        std: per-component standard deviation ``s_k``: one float for all, or a ``[K]`` tensor.
        weights: mixture weights ``w_k``, ``[K]``, positive; normalised to sum to 1.
            ``None`` means equal weights.
    """

    def __init__(
        self, means: Tensor, std: float | Tensor = 0.1, weights: Tensor | None = None
    ) -> None:
        self.means = _check_means(means)
        self.stds = _check_stds(std, self.n_modes, self.means)
        self.weights = _check_weights(weights, self.n_modes, self.means)

    # -- presets ------------------------------------------------------------------------------

    @classmethod
    def ring(
        cls,
        n_modes: int = 8,
        radius: float = 2.0,
        std: float = 0.1,
        weights: Tensor | None = None,
    ) -> GaussianMixture:
        """``n_modes`` components evenly spaced on a circle of ``radius`` in 2-D."""
        if n_modes < 1:
            raise ValueError(f"ring needs n_modes >= 1, got {n_modes}")
        angle = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
        means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        return cls(means.to(torch.get_default_dtype()), std, weights)

    @classmethod
    def grid(
        cls,
        side: int = 5,
        spacing: float = 1.0,
        std: float = 0.05,
        weights: Tensor | None = None,
    ) -> GaussianMixture:
        """A ``side x side`` grid of components in 2-D, centred at the origin (5x5 by default)."""
        if side < 1:
            raise ValueError(f"grid needs side >= 1, got {side}")
        axis = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * spacing
        gx, gy = torch.meshgrid(axis, axis, indexing="ij")
        means = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
        return cls(means.to(torch.get_default_dtype()), std, weights)

    @classmethod
    def unbalanced_ring(
        cls,
        n_modes: int = 8,
        radius: float = 2.0,
        std: float = 0.1,
        ratio: float = 10.0,
    ) -> GaussianMixture:
        """A :meth:`ring` whose weights fall geometrically, heaviest / lightest = ``ratio``.

        ``w_k ∝ ratio^(-k / (K - 1))``: the light modes are the ones mode-seeking divergences
        (reverse KL) drop first, which is what f-divergence mode-coverage experiments measure.
        """
        if ratio < 1:
            raise ValueError(f"ratio is heaviest / lightest weight and must be >= 1, got {ratio}")
        k = torch.arange(n_modes, dtype=torch.float64)
        weights = float(ratio) ** (-k / max(n_modes - 1, 1))
        return cls.ring(n_modes, radius, std, weights.to(torch.get_default_dtype()))

    # -- basic properties ---------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Data dimension ``D``."""
        return self.means.shape[1]

    @property
    def n_modes(self) -> int:
        """Number of components ``K``."""
        return self.means.shape[0]

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> GaussianMixture:
        """A copy with means, stds and weights on ``device`` / in ``dtype``."""
        return GaussianMixture(
            self.means.to(device=device, dtype=dtype),
            self.stds.to(device=device, dtype=dtype),
            self.weights.to(device=device, dtype=dtype),
        )

    def __repr__(self) -> str:
        return f"GaussianMixture(n_modes={self.n_modes}, dim={self.dim})"

    # -- sampling and density -----------------------------------------------------------------

    def sample_with_labels(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw ``n`` samples and their component labels.

        Returns:
            ``x`` of shape ``[n, D]`` (on the means' device and dtype) and ``k`` (long, ``[n]``).
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(
            n, self.dim, generator=generator, device=self.means.device, dtype=self.means.dtype
        )
        return self.means[k] + self.stds[k, None] * eps, k

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples, ``[n, D]``."""
        return self.sample_with_labels(n, generator)[0]

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density ``log p(x)`` of data points ``x`` (``[B, D]``), shape ``[B]``."""
        one = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        return noised_log_prob(self, x, one, torch.zeros_like(one))

    def denoiser(self, process: NoiseProcess) -> GMMDenoiser:
        """The exact teacher ``E[x0 | x_t]`` of this mixture under ``process``."""
        return GMMDenoiser(self, process)


def _component_terms(
    gmm: GaussianMixture | GMMDenoiser, x_t: Tensor, alpha: Tensor, sigma: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-component pieces of the noised mixture at ``x_t``.

    Args:
        gmm: supplies ``means`` ``[K, D]``, ``stds`` ``[K]`` and ``weights`` ``[K]``.
        x_t: ``[B, D]``.
        alpha: ``[B]``.
        sigma: ``[B]``.

    Returns:
        ``log w_k + log N(x_t; alpha mu_k, var_k I)`` (``[B, K]``), the residual
        ``x_t - alpha mu_k`` (``[B, K, D]``), ``var_k = alpha^2 s_k^2 + sigma^2`` (``[B, K]``)
        and ``alpha`` as ``[B, 1]``.
    """
    means = gmm.means.to(x_t)
    stds = gmm.stds.to(x_t)
    log_w = torch.log(gmm.weights.to(x_t))
    alpha, sigma = alpha.to(x_t)[:, None], sigma.to(x_t)[:, None]  # (B, 1)
    var = alpha**2 * stds**2 + sigma**2  # (B, K)
    resid = x_t[:, None, :] - alpha[:, :, None] * means  # (B, K, D)
    sq = resid.pow(2).sum(-1)  # (B, K)
    d = x_t.shape[1]
    log_joint = log_w - 0.5 * (sq / var + d * torch.log(2 * math.pi * var))
    return log_joint, resid, var, alpha


def noised_log_prob(
    gmm: GaussianMixture | GMMDenoiser, x_t: Tensor, alpha: Tensor, sigma: Tensor
) -> Tensor:
    """``log p_t(x_t)`` of the mixture noised as ``alpha x0 + sigma eps``; ``[B]``.

    ``p_t = sum_k w_k N(x_t; alpha mu_k, (alpha^2 s_k^2 + sigma^2) I)``, by the Gaussian
    convolution identity.
    """
    return torch.logsumexp(_component_terms(gmm, x_t, alpha, sigma)[0], dim=1)


class GMMDenoiser(DenoiserBase):
    """The exact denoiser ``E[x0 | x_t]`` of a :class:`GaussianMixture` (an ideal teacher).

    For ``x_t = alpha x0 + sigma eps`` the posterior responsibility of component ``k`` is
    ``r_k ∝ w_k N(x_t; alpha mu_k, (alpha^2 s_k^2 + sigma^2) I)`` (computed in log space, so it
    stays stable for tiny ``sigma``) and, within a component, Gaussian conditioning gives
    ``E[x0 | x_t, k] = mu_k + alpha s_k^2 / (alpha^2 s_k^2 + sigma^2) (x_t - alpha mu_k)``.
    The score derived by :class:`~onestep.core.denoiser.DenoiserBase` is then exact too.

    Differentiable in ``x_t``; computes in ``x_t``'s dtype and on its device.

    ``cond`` (optional) restricts the mixture to a subset of components, a class-conditional
    teacher for guidance tests:

    * a long tensor ``[B]`` of component labels: sample ``b`` uses component ``cond[b]`` only;
      label ``-1`` means unconditional (all components), so ``torch.tensor([-1])`` is the null
      condition for :class:`~onestep.core.denoiser.Guided`.
    * a bool tensor ``[B, K]`` (or ``[K]``): the allowed components, renormalised by weight.

    Args:
        gmm: the mixture.
        process: the noise process ``x_t`` was made with.
    """

    means: Tensor  # (K, D), buffer
    stds: Tensor  # (K,), buffer
    weights: Tensor  # (K,), buffer

    def __init__(self, gmm: GaussianMixture, process: NoiseProcess) -> None:
        super().__init__()
        self.process = process
        self.register_buffer("means", gmm.means.clone())
        self.register_buffer("stds", gmm.stds.clone())
        self.register_buffer("weights", gmm.weights.clone())

    @property
    def mixture(self) -> GaussianMixture:
        """The mixture this teacher denoises (a copy of the buffers)."""
        return GaussianMixture(self.means, self.stds, self.weights)

    def _flat(self, x_t: Tensor) -> Tensor:
        d = self.means.shape[1]
        if x_t.ndim < 2 or math.prod(x_t.shape[1:]) != d:
            raise ValueError(
                f"x_t must be [B, {d}] (or [B, ...] with {d} elements per sample) for this "
                f"mixture, got {tuple(x_t.shape)}"
            )
        return x_t.reshape(x_t.shape[0], d)

    def _mask(self, cond: Any, batch: int, device: torch.device) -> Tensor | None:
        """Allowed components as a bool ``[B, K]`` mask, or ``None`` for all."""
        if cond is None:
            return None
        k = self.means.shape[0]
        if not torch.is_tensor(cond):
            raise TypeError(f"cond must be a label or mask tensor, got {type(cond).__name__}")
        cond = cond.to(device)
        if cond.dtype == torch.bool:
            mask = cond.expand(batch, k) if cond.shape in ((k,), (1, k)) else cond
            if mask.shape != (batch, k):
                raise ValueError(f"a cond mask must be [B, K] = [{batch}, {k}], got {cond.shape}")
        elif not cond.is_floating_point():
            labels = cond.reshape(-1).expand(batch) if cond.numel() == 1 else cond
            if labels.shape != (batch,) or bool(((labels < -1) | (labels >= k)).any()):
                raise ValueError(
                    f"cond labels must be [B] = [{batch}] in -1..{k - 1} (-1: unconditional), "
                    f"got shape {tuple(cond.shape)}"
                )
            comps = torch.arange(k, device=device)
            mask = (labels[:, None] == comps) | (labels[:, None] == -1)
        else:
            raise TypeError(f"cond must be long labels or a bool mask, got dtype {cond.dtype}")
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every sample's cond mask must allow at least one component")
        return mask

    def _log_joint(self, x_t: Tensor, t: Tensor | float, cond: Any) -> tuple[Tensor, ...]:
        """:func:`_component_terms` at ``(x_t, t)`` with disallowed components at ``-inf``."""
        x = self._flat(x_t)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape [B] = [{x.shape[0]}], got {tuple(t.shape)}")
        log_joint, resid, var, alpha = _component_terms(
            self, x, self.process.alpha(t), self.process.sigma(t)
        )
        mask = self._mask(cond, x.shape[0], x.device)
        if mask is not None:
            log_joint = log_joint.masked_fill(~mask, -math.inf)
            # Renormalise the prior over the allowed components: p(x_t | allowed set).
            log_w = torch.log(self.weights.to(log_joint)).expand_as(log_joint)
            log_joint = log_joint - torch.logsumexp(log_w.masked_fill(~mask, -math.inf), 1)[:, None]
        return log_joint, resid, var, alpha

    def posterior(self, x_t: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        """Responsibilities ``r_k = p(k | x_t)``, ``[B, K]``."""
        return torch.softmax(self._log_joint(x_t, t, cond)[0], dim=1)

    def log_prob(self, x_t: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        """Closed-form ``log p_t(x_t)`` of the noised (optionally conditioned) mixture, ``[B]``."""
        return torch.logsumexp(self._log_joint(x_t, t, cond)[0], dim=1)

    def forward(self, x_t: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        """Exact ``E[x0 | x_t]``, same shape as ``x_t``; ``t`` is ``[B]`` in [0, 1]."""
        log_joint, resid, var, alpha = self._log_joint(x_t, t, cond)
        r = torch.softmax(log_joint, dim=1)  # (B, K)
        gain = alpha * self.stds.to(var) ** 2 / var  # (B, K)
        x0_k = self.means.to(resid) + gain[:, :, None] * resid  # (B, K, D)
        x0 = (r[:, :, None] * x0_k).sum(1)  # (B, D)
        return x0.reshape(x_t.shape)
