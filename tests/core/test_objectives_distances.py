"""Per-sample distances against their formulas written out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from onestep.core.objectives import distance, ict_huber_c, pseudo_huber, squared_l2


def test_pseudo_huber_matches_the_formula_and_its_limits():
    a, b = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    c = 0.3
    norm2 = torch.stack([((a[i] - b[i]) ** 2).sum() for i in range(5)])
    assert_close(pseudo_huber(a, b, c), torch.sqrt(norm2 + c * c) - c)
    # Quadratic for small differences: ~ ||d||^2 / (2c); linear for large: ~ ||d|| - c.
    small = 1e-3 * torch.randn(4, 8, dtype=torch.float64)
    assert_close(
        pseudo_huber(small, torch.zeros_like(small), 1.0),
        (small**2).sum(1) / 2,
        rtol=1e-4,
        atol=1e-10,
    )
    big = 1e3 * torch.randn(4, 8, dtype=torch.float64)
    assert_close(
        pseudo_huber(big, torch.zeros_like(big), 1.0), big.norm(dim=1) - 1.0, rtol=1e-5, atol=1e-3
    )


def test_default_scale_is_improved_ct():
    x = torch.randn(2, 3, 8, 8)
    assert ict_huber_c(x) == pytest.approx(0.00054 * math.sqrt(192))
    assert_close(pseudo_huber(x, 0 * x), pseudo_huber(x, 0 * x, ict_huber_c(x)))


def test_named_distances_and_errors():
    a, b = torch.randn(3, 6), torch.randn(3, 6)
    assert_close(distance("l2", a, b), ((a - b) ** 2).mean(1))
    assert_close(squared_l2(a, b), ((a - b) ** 2).mean(1))
    assert_close(distance("pseudo_huber", a, b, 0.5), pseudo_huber(a, b, 0.5))
    with pytest.raises(ValueError, match="unknown distance"):
        distance("l1", a, b)
    with pytest.raises(ValueError, match="c > 0"):
        pseudo_huber(a, b, 0.0)
