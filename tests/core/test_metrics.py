import math

import pytest
import torch
from torch.testing import assert_close

from onestep.core import metrics
from onestep.core.data.gmm import GaussianMixture
from onestep.core.metrics import (
    energy_distance,
    feature_stats,
    frechet_distance,
    frechet_distance_from_stats,
    mmd_rbf,
    mode_coverage,
    sliced_wasserstein,
)

# -- Fréchet distance ---------------------------------------------------------------------------


def test_frechet_diagonal_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0]).double(), torch.tensor([0.5, 1.0, 0.0]).double()
    c1, c2 = torch.tensor([1.0, 4.0, 0.25]).double(), torch.tensor([2.0, 1.0, 0.25]).double()
    # Diagonal: tr(C1 + C2 - 2 (C1 C2)^1/2) = sum (sqrt(c1) - sqrt(c2))^2.
    expected = float(((mu1 - mu2) ** 2).sum() + ((c1.sqrt() - c2.sqrt()) ** 2).sum())
    got = frechet_distance_from_stats(mu1, torch.diag(c1), mu2, torch.diag(c2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_full_covariance_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 5, generator=gen), torch.randn(5, 5, generator=gen)
    c1 = (a @ a.T + 0.1 * torch.eye(5)).double()
    c2 = (b @ b.T + 0.1 * torch.eye(5)).double()
    mu1, mu2 = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    root = linalg.sqrtm((c1 @ c2).numpy())
    expected = float((mu1 - mu2) @ (mu1 - mu2) + torch.trace(c1 + c2)) - 2 * float(
        root.real.trace()
    )
    assert frechet_distance_from_stats(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance_from_stats(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_from_samples_and_features():
    gen = torch.Generator().manual_seed(1)
    n = 20_000
    scale = torch.tensor([1.0, 0.5, 2.0])
    x = torch.randn(n, 3, generator=gen)
    y = torch.randn(n, 3, generator=gen) * scale + torch.tensor([1.0, 0.0, 0.0])
    expected = 1.0 + float(((1 - scale) ** 2).sum())  # 1 + 0.25 + 1 = 2.25
    assert frechet_distance(x, y) == pytest.approx(expected, abs=0.06)
    # Features are applied first; FD is quadratic in a linear scaling of the features.
    assert frechet_distance(x, y, features=lambda z: 2 * z) == pytest.approx(
        4 * frechet_distance(x, y), rel=1e-9
    )
    mu, cov = feature_stats(x.reshape(n, 3, 1))  # [N, ...] is flattened
    assert mu.dtype == torch.float64 and cov.shape == (3, 3)
    assert_close(cov, torch.cov(x.double().T))
    with pytest.raises(ValueError, match="cov"):
        frechet_distance_from_stats(mu, cov, mu[:2], cov)


# -- energy distance ----------------------------------------------------------------------------


def _abs_normal_mean(m: float, s: float) -> float:
    """E|Z| for Z ~ N(m, s^2) (folded normal)."""
    return s * math.sqrt(2 / math.pi) * math.exp(-(m**2) / (2 * s**2)) + m * math.erf(
        m / (s * math.sqrt(2))
    )


def test_energy_distance_is_the_u_statistic():
    x, y = torch.randn(7, 3), torch.randn(5, 3) + 1
    dxy, dxx, dyy = torch.cdist(x, y), torch.cdist(x, x), torch.cdist(y, y)
    expected = 2 * dxy.mean() - dxx.sum() / (7 * 6) - dyy.sum() / (5 * 4)
    assert energy_distance(x, y) == pytest.approx(float(expected), rel=1e-6)


def _normal_grid(n: int, offset: float = 0.5) -> torch.Tensor:
    """Stratified N(0, 1) samples ``Phi^-1((i + offset) / n)``: low-variance test data."""
    levels = (torch.arange(n, dtype=torch.float64) + offset) / n
    return torch.special.ndtri(levels)[:, None]


def test_energy_distance_closed_form_and_ordering():
    x = _normal_grid(3000)
    same = energy_distance(x, _normal_grid(2000, offset=0.3))
    shifted = {s: energy_distance(x, _normal_grid(2000, offset=0.3) + s) for s in (0.5, 1.0)}
    # 1-D N(0,1) vs N(s,1): 2 E|N(s, 2)| - E|N(0, 2)| - E|N(0, 2)|.
    for s, got in shifted.items():
        exact = 2 * _abs_normal_mean(s, math.sqrt(2)) - 2 * _abs_normal_mean(0.0, math.sqrt(2))
        assert got == pytest.approx(exact, abs=2e-3)
    assert abs(same) < 1e-3 < 0.1 < shifted[0.5] < shifted[1.0]
    # Random samples: zero in expectation, so small next to a shift.
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(1000, 2, generator=gen), torch.randn(1000, 2, generator=gen)
    assert abs(energy_distance(a, b)) < 0.1 * energy_distance(a, b + 0.5)


def test_energy_distance_blocks_do_not_change_the_result(monkeypatch):
    x, y = torch.randn(300, 4), torch.randn(200, 4) + 0.3
    full = energy_distance(x, y)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMS", 20_000)  # forces several row blocks
    assert energy_distance(x, y) == pytest.approx(full, rel=1e-12)
    assert energy_distance(x.reshape(300, 2, 2), y.reshape(200, 2, 2)) == pytest.approx(full)


# -- MMD ----------------------------------------------------------------------------------------


def test_mmd_is_the_unbiased_estimator():
    x, y = torch.randn(6, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64) + 1
    h = 0.7

    def k(a, b):
        return torch.exp(-(torch.cdist(a, b) ** 2) / (2 * h**2))

    kxx, kyy = k(x, x), k(y, y)
    expected = (
        (kxx.sum() - kxx.diagonal().sum()) / 30
        + (kyy.sum() - kyy.diagonal().sum()) / 12
        - 2 * k(x, y).mean()
    )
    assert mmd_rbf(x, y, bandwidth=h) == pytest.approx(float(expected), rel=1e-6)
    # Median heuristic: the bandwidth is the median pooled pairwise distance.
    pooled = torch.cat([x, y])
    d = torch.cdist(pooled, pooled)
    med = float(d[torch.triu_indices(10, 10, 1).unbind()].median())
    assert mmd_rbf(x, y) == pytest.approx(mmd_rbf(x, y, bandwidth=med), rel=1e-9)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_rbf(torch.zeros(3, 2), torch.zeros(3, 2))


def test_mmd_zero_for_same_distribution_and_ordered_by_shift():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2000, 2, generator=gen)
    same = mmd_rbf(x, torch.randn(2000, 2, generator=gen), bandwidth=1.0)
    small = mmd_rbf(x, torch.randn(2000, 2, generator=gen) + 0.3, bandwidth=1.0)
    large = mmd_rbf(x, torch.randn(2000, 2, generator=gen) + 1.0, bandwidth=1.0)
    assert abs(same) < 0.005 < small < large


# -- sliced Wasserstein --------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2])
def test_sliced_wasserstein_of_a_1d_shift_is_the_shift(p):
    x = torch.randn(500, 1, dtype=torch.float64)
    assert sliced_wasserstein(x, x + 0.7, p=p) == pytest.approx(0.7, rel=1e-9)
    assert sliced_wasserstein(x, x) == pytest.approx(0.0, abs=1e-12)


def test_sliced_wasserstein_shift_in_d_dims_and_unequal_sizes():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1000, 3, generator=gen)
    shift = torch.tensor([1.0, -2.0, 2.0])  # |s| = 3
    # E_theta (theta . s)^2 = |s|^2 / D on the sphere, so SW_2 = |s| / sqrt(D).
    got = sliced_wasserstein(x, x + shift, n_projections=2048)
    assert got == pytest.approx(3 / math.sqrt(3), rel=0.03)
    # Deterministic by default; a generator changes the directions.
    assert sliced_wasserstein(x, x + shift) == sliced_wasserstein(x, x + shift)
    other = sliced_wasserstein(x, x + shift, generator=torch.Generator().manual_seed(9))
    assert other != sliced_wasserstein(x, x + shift)
    # Unequal sizes go through quantile functions.
    a, b = torch.randn(4000, 1, generator=gen), torch.randn(3000, 1, generator=gen) + 0.5
    assert sliced_wasserstein(a, b) == pytest.approx(0.5, abs=0.05)


# -- mode coverage ------------------------------------------------------------------------------


def test_mode_coverage_counts_constructed_samples():
    gmm = GaussianMixture.ring(n_modes=8, std=0.1)
    x, k = gmm.sample_with_labels(4000)
    full = mode_coverage(x, gmm.means, std=0.1)
    assert (full.covered, full.n_modes, full.all_covered) == (8, 8, True)
    assert full.outliers < 0.03  # in 2-D, P(|z| > 3) = exp(-4.5) = 1.1%
    assert_close(full.fractions.sum(), torch.tensor(1 - full.outliers, dtype=torch.float64))

    dropped = mode_coverage(x[k != 3], gmm)  # the mixture supplies std and weights
    assert (dropped.covered, dropped.all_covered) == (7, False)
    assert float(dropped.fractions[3]) == 0.0

    # 25% of the samples far from every mode are outliers and do not count for any mode.
    far = torch.full((1000, 2), 10.0)
    at_modes = gmm.means[k[:3000]]
    with_out = mode_coverage(torch.cat([at_modes, far]), gmm.means, radius=0.3)
    assert with_out.outliers == pytest.approx(0.25, abs=1e-12)
    assert with_out.covered == 8

    # A mode with too few samples is not covered: 10 of ~3500 samples < 0.2 / 8.
    sparse = torch.cat([x[k != 0], x[k == 0][:10]])
    assert mode_coverage(sparse, gmm.means, std=0.1).covered == 7
    assert mode_coverage(sparse, gmm.means, std=0.1, min_fraction=0.001).covered == 8


def test_mode_coverage_weight_aware_threshold_and_errors():
    gmm = GaussianMixture.unbalanced_ring(n_modes=4, ratio=20.0)
    x = gmm.sample(4000)
    cov = mode_coverage(x, gmm)
    assert cov.all_covered
    assert_close(cov.thresholds, 0.2 * gmm.weights.double())
    with pytest.raises(ValueError, match="radius= or std="):
        mode_coverage(x, gmm.means)
    with pytest.raises(ValueError, match="dimension"):
        mode_coverage(torch.randn(10, 3), gmm.means, std=0.1)


@pytest.mark.slow
def test_large_sample_metrics_stay_bounded_and_agree():
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(20_000, 2, generator=gen), torch.randn(20_000, 2, generator=gen)
    assert abs(energy_distance(x, y)) < 5e-3
    assert abs(mmd_rbf(x, y)) < 5e-4
