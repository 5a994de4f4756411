"""Sample-based distances between distributions, over any feature extractor.

Every metric takes two sample sets ``[N, ...]`` (flattened to ``[N, D]``), optionally mapped
through ``features`` first (a callable such as an Inception or CLIP embedding), and returns a
Python ``float`` computed in float64 on the samples' device. Pairwise sums are taken in row
blocks so memory stays bounded (about 128 MB) for ``N`` up to tens of thousands.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ModeCoverage",
    "energy_distance",
    "feature_stats",
    "frechet_distance",
    "frechet_distance_from_stats",
    "mmd_rbf",
    "mode_coverage",
    "sliced_wasserstein",
]

FeatureFn = Callable[[Tensor], Tensor]
_BLOCK_ELEMS = 1 << 24  # entries of one pairwise block (float64: 128 MB)


def _prepare(x: Tensor, features: FeatureFn | None, name: str) -> Tensor:
    """Apply ``features`` (without grad), flatten to ``[N, D]``, cast to float64."""
    if features is not None:
        with torch.no_grad():
            x = features(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch [N, ...], got {tuple(x.shape)}")
    return x.detach().reshape(x.shape[0], -1).to(torch.float64)


def _pair(x: Tensor, y: Tensor, features: FeatureFn | None) -> tuple[Tensor, Tensor]:
    x, y = _prepare(x, features, "x"), _prepare(y, features, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y differ in dimension: {x.shape[1]} vs {y.shape[1]}")
    return x, y.to(x.device)


def _block_sum(a: Tensor, b: Tensor, fn: Callable[[Tensor], Tensor], skip_diagonal: bool) -> float:
    """``sum_ij fn(|a_i - b_j|)`` over all pairs, in row blocks of bounded size.

    With ``skip_diagonal`` (``a is b``), the ``i = j`` pairs are left out: the U-statistics need
    that, and the matrix-product distance formula is not exactly 0 there.
    """
    rows = max(1, _BLOCK_ELEMS // max(b.shape[0], 1))
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for start in range(0, a.shape[0], rows):
        vals = fn(torch.cdist(a[start : start + rows], b))  # (rows, M)
        if skip_diagonal:
            i = torch.arange(vals.shape[0], device=a.device)
            vals[i, start + i] = 0.0
        total += vals.sum()
    return float(total)


def _identity(d: Tensor) -> Tensor:
    return d


def energy_distance(x: Tensor, y: Tensor, *, features: FeatureFn | None = None) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (Székely & Rizzo 2013).

    The U-statistic: the within-sample means skip the ``i = j`` pairs, so the estimate is unbiased
    and its expectation is 0 when ``x`` and ``y`` come from the same distribution (it can then be
    slightly negative). The population value is zero iff the distributions are equal.

    Args:
        x: samples ``[N, ...]``, ``N >= 2``.
        y: samples ``[M, ...]``, ``M >= 2``.
        features: optional map applied to both sets first.

    Returns:
        The (squared-distance-scale) energy distance as a float.
    """
    x, y = _pair(x, y, features)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"energy_distance needs >= 2 samples per set, got {n} and {m}")
    xy = _block_sum(x, y, _identity, skip_diagonal=False) / (n * m)
    xx = _block_sum(x, x, _identity, skip_diagonal=True) / (n * (n - 1))
    yy = _block_sum(y, y, _identity, skip_diagonal=True) / (m * (m - 1))
    return 2 * xy - xx - yy


def _median_distance(x: Tensor, y: Tensor, max_points: int = 2048) -> float:
    """Median pairwise distance of the pooled samples (evenly strided subset, deterministic)."""
    pooled = torch.cat([x, y])
    step = max(1, math.ceil(pooled.shape[0] / max_points))
    sub = pooled[::step]
    dist = torch.cdist(sub, sub)
    iu = torch.triu_indices(sub.shape[0], sub.shape[0], offset=1, device=sub.device)
    return float(dist[iu[0], iu[1]].median())


def mmd_rbf(
    x: Tensor,
    y: Tensor,
    bandwidth: float | None = None,
    *,
    features: FeatureFn | None = None,
) -> float:
    """Unbiased squared MMD with a Gaussian kernel (Gretton et al. 2012, eq. 3).

    ``k(a, b) = exp(-|a - b|^2 / (2 h^2))``; the within-sample sums skip ``i = j``, so the
    estimate has expectation 0 for equal distributions (and can be slightly negative).

    Args:
        x: samples ``[N, ...]``, ``N >= 2``.
        y: samples ``[M, ...]``, ``M >= 2``.
        bandwidth: kernel width ``h``; ``None`` uses the median heuristic, the median pairwise
            distance of the pooled samples (on an evenly strided subset of at most 2048 points).
        features: optional map applied to both sets first.

    Returns:
        ``MMD_u^2`` as a float.
    """
    x, y = _pair(x, y, features)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"mmd_rbf needs >= 2 samples per set, got {n} and {m}")
    h = _median_distance(x, y) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ValueError(
            f"RBF bandwidth must be > 0, got {h}; the samples may be all identical, "
            "pass bandwidth= explicitly"
        )

    def kernel(d: Tensor) -> Tensor:
        return d.square_().mul_(-0.5 / h**2).exp_()

    kxx = _block_sum(x, x, kernel, skip_diagonal=True) / (n * (n - 1))
    kyy = _block_sum(y, y, kernel, skip_diagonal=True) / (m * (m - 1))
    kxy = _block_sum(x, y, kernel, skip_diagonal=False) / (n * m)
    return kxx + kyy - 2 * kxy


def _quantiles(sorted_proj: Tensor, levels: Tensor) -> Tensor:
    """Linear interpolation of sorted rows ``[P, N]`` at quantile ``levels`` ``[L]``."""
    n = sorted_proj.shape[1]
    pos = (levels * n - 0.5).clamp(0, n - 1)  # level q sits at (0-based) index q N - 1/2
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = pos - lo
    return sorted_proj[:, lo] * (1 - w) + sorted_proj[:, hi] * w


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    n_projections: int = 256,
    p: float = 2,
    generator: torch.Generator | None = None,
    *,
    features: FeatureFn | None = None,
) -> float:
    """Sliced Wasserstein distance ``(E_theta W_p^p(theta.x, theta.y))^(1/p)``.

    (Rabin et al. 2011; Bonneel et al. 2015). Directions ``theta`` are uniform on the
    sphere; each 1-D ``W_p`` is exact by sorting when ``N = M``, otherwise both quantile
    functions are compared at ``max(N, M)`` midpoint levels with linear interpolation.

    Args:
        x: samples ``[N, ...]``.
        y: samples ``[M, ...]``.
        n_projections: number of random directions.
        p: order of the Wasserstein distance, ``>= 1``.
        generator: source of the directions (CPU); ``None`` uses a fixed seed (0), so repeated
            calls on the same samples agree.
        features: optional map applied to both sets first.

    Returns:
        ``SW_p`` as a float (in the units of the samples).
    """
    if p < 1 or n_projections < 1:
        raise ValueError(f"need p >= 1 and n_projections >= 1, got p={p}, {n_projections}")
    x, y = _pair(x, y, features)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)  # (D, P), unit columns
    # Projections as (P, N) rows: sorting along the contiguous last dim is much faster.
    px, py = (theta.T @ x.T).sort(dim=1).values, (theta.T @ y.T).sort(dim=1).values
    if px.shape[1] != py.shape[1]:
        n = max(px.shape[1], py.shape[1])
        levels = (torch.arange(n, dtype=torch.float64, device=x.device) + 0.5) / n
        px, py = _quantiles(px, levels), _quantiles(py, levels)
    w_pp = (px - py).abs().pow(p).mean(dim=1)  # W_p^p per direction, (P,)
    return float(w_pp.mean() ** (1 / p))


@dataclass
class ModeCoverage:
    """Which modes of a mixture a sample set reaches.

    Attributes:
        covered: number of modes whose fraction reaches its threshold.
        n_modes: number of modes ``K``.
        fractions: fraction of all samples assigned to each mode (nearest mean, within its
            radius), ``[K]``, float64.
        outliers: fraction of samples within no mode's radius.
        all_covered: ``covered == n_modes``.
        thresholds: the per-mode minimum fractions used, ``[K]``.
    """

    covered: int
    n_modes: int
    fractions: Tensor
    outliers: float
    all_covered: bool
    thresholds: Tensor


def _mode_params(
    means: Any, std: float | Tensor | None, weights: Tensor | None
) -> tuple[Tensor, Tensor | float | None, Tensor | None]:
    """Unpack a GaussianMixture (anything with ``means``, ``stds``, ``weights``) or a tensor."""
    if torch.is_tensor(means):
        return means, std, weights
    if all(hasattr(means, a) for a in ("means", "stds", "weights")):
        return (
            means.means,
            means.stds if std is None else std,
            means.weights if weights is None else weights,
        )
    raise TypeError(f"means must be a [K, D] tensor or a GaussianMixture, got {type(means)}")


def mode_coverage(
    samples: Tensor,
    means: Tensor | Any,
    *,
    radius: float | Tensor | None = None,
    std: float | Tensor | None = None,
    min_fraction: float | Tensor | None = None,
    weights: Tensor | None = None,
) -> ModeCoverage:
    """Count the modes a sample set covers (the standard 2-D ring / grid benchmark).

    Each sample goes to its nearest mean and counts for that mode when it lies within the mode's
    radius; otherwise it is an outlier. A mode is covered when its fraction of all samples is at
    least its threshold.

    Args:
        samples: ``[N, D]`` (or ``[N, ...]``, flattened).
        means: mode centres ``[K, D]``, or a ``GaussianMixture`` (supplies ``std`` and
            ``weights`` unless given).
        radius: acceptance radius, float or ``[K]``; default ``3 * std``.
        std: per-mode standard deviation, float or ``[K]``; needed when ``radius`` is not given.
        min_fraction: threshold per mode, float or ``[K]``; default ``0.2 * w_k`` with ``weights``,
            else ``0.2 / K``.
        weights: mode weights ``[K]`` for the weight-aware default threshold.

    Returns:
        A :class:`ModeCoverage`.
    """
    centres, std, weights = _mode_params(means, std, weights)
    x = _prepare(samples, None, "samples")
    mu = centres.detach().reshape(centres.shape[0], -1).to(x)
    k = mu.shape[0]
    if mu.shape[1] != x.shape[1]:
        raise ValueError(f"samples have dimension {x.shape[1]}, means {mu.shape[1]}")
    if radius is None:
        if std is None:
            raise ValueError("mode_coverage needs radius= or std= (radius defaults to 3 * std)")
        radius = 3 * torch.as_tensor(std, dtype=torch.float64)
    r = torch.as_tensor(radius, dtype=torch.float64).to(x.device).expand(k)
    if min_fraction is None:
        w = torch.full((k,), 1.0 / k) if weights is None else torch.as_tensor(weights)
        min_fraction = 0.2 * w.to(torch.float64) / w.sum()
    thresholds = torch.as_tensor(min_fraction, dtype=torch.float64).to(x.device).expand(k)

    dist = torch.cdist(x, mu)  # (N, K)
    nearest_dist, nearest = dist.min(dim=1)
    inside = nearest_dist <= r[nearest]
    counts = torch.bincount(nearest[inside], minlength=k).to(torch.float64)
    fractions = counts / x.shape[0]
    covered = int((fractions >= thresholds).sum())
    return ModeCoverage(
        covered=covered,
        n_modes=k,
        fractions=fractions,
        outliers=1.0 - float(inside.to(torch.float64).mean()),
        all_covered=covered == k,
        thresholds=thresholds.clone(),
    )


def feature_stats(feats: Tensor, *, features: FeatureFn | None = None) -> tuple[Tensor, Tensor]:
    """Mean and covariance of a feature set, in float64.

    Args:
        feats: ``[N, ...]`` (flattened to ``[N, D]``), ``N >= 2``.
        features: optional map applied first.

    Returns:
        ``mu`` ``[D]`` and the unbiased covariance ``[D, D]`` (divides by ``N - 1``, as
        ``numpy.cov`` and the reference FID code do).
    """
    f = _prepare(feats, features, "feats")
    if f.shape[0] < 2:
        raise ValueError(f"feature_stats needs >= 2 samples, got {f.shape[0]}")
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _sqrtm_psd(a: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition."""
    evals, evecs = torch.linalg.eigh((a + a.T) / 2)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def frechet_distance_from_stats(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Fréchet distance between ``N(mu1, C1)`` and ``N(mu2, C2)`` (Heusel et al. 2017, FID eq.).

    ``d^2 = |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))``. The trace of the square root is
    ``sum_i sqrt(lambda_i)`` over the eigenvalues of the symmetric PSD matrix
    ``C1^(1/2) C2 C1^(1/2)``, which has the same spectrum as ``C1 C2``; this avoids the complex
    values a general ``sqrtm`` of the non-symmetric ``C1 C2`` can produce. Computed in float64.

    Returns:
        ``d^2`` as a float (FID reports this squared distance).
    """
    mu1, mu2 = (m.detach().to(torch.float64).reshape(-1) for m in (mu1, mu2))
    cov1, cov2 = (c.detach().to(torch.float64).to(mu1.device) for c in (cov1, cov2))
    d = mu1.shape[0]
    if mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(
            f"expected mu [D] and cov [D, D] for both, got {tuple(mu1.shape)}, "
            f"{tuple(cov1.shape)}, {tuple(mu2.shape)}, {tuple(cov2.shape)}"
        )
    s1 = _sqrtm_psd(cov1)
    middle = s1 @ cov2 @ s1
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    diff = mu1 - mu2.to(mu1.device)
    return float(diff @ diff + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_sqrt)


def frechet_distance(
    feats_a: Tensor, feats_b: Tensor, *, features: FeatureFn | None = None
) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID with any extractor).

    Args:
        feats_a: ``[N, ...]``, ``N >= 2``.
        feats_b: ``[M, ...]``, ``M >= 2``.
        features: optional feature extractor applied to both sets first.

    Returns:
        The squared Fréchet distance, see :func:`frechet_distance_from_stats`.
    """
    mu1, cov1 = feature_stats(feats_a, features=features)
    mu2, cov2 = feature_stats(feats_b, features=features)
    return frechet_distance_from_stats(mu1, cov1, mu2, cov2)
