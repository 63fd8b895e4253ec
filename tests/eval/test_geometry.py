"""Collapse diagnostics against cases whose answers are known."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.eval.geometry import alignment, covariance_spectrum, hard_rank, rankme, uniformity


def test_covariance_spectrum__rank_k_features_have_k_nonzero_values():
    g = torch.Generator().manual_seed(0)
    for k in (1, 3, 7):
        z = torch.randn(500, k, generator=g) @ torch.randn(k, 16, generator=g)  # rank k in 16 dimensions
        # L2 normalization bends the rank-k subspace onto a sphere: still inside the same k-dim span
        spectrum = covariance_spectrum(z)
        assert spectrum.shape == (16,)
        assert (spectrum[:-1] >= spectrum[1:]).all(), "sorted descending"
        assert hard_rank(spectrum) == k
        assert spectrum[k:].max() < 1e-12 * spectrum[0]


def test_rankme__collapsed_is_one_and_isotropic_is_near_full():
    g = torch.Generator().manual_seed(0)
    assert rankme(torch.ones(100, 8) * 3.0) == pytest.approx(1.0, abs=1e-3)
    full = rankme(torch.randn(20_000, 16, generator=g, dtype=torch.float64))
    assert 15.5 < full <= 16.0
    two_equal = torch.zeros(10, 4)
    two_equal[:5, 0], two_equal[5:, 1] = 1.0, 1.0  # two equal singular values: entropy log 2
    assert rankme(two_equal) == pytest.approx(2.0, rel=1e-5)


def test_uniformity__collapsed_set_is_zero_and_two_points_by_hand():
    assert uniformity(torch.ones(50, 4)) == pytest.approx(0.0, abs=1e-12)
    # two antipodal unit vectors: one pair at squared distance 4 -> log exp(-2 * 4) = -8
    assert uniformity(torch.tensor([[1.0, 0.0], [-2.0, 0.0]])) == pytest.approx(-8.0)
    # three points: pairs at squared distance 2, 2 and 4 (orthogonal and antipodal)
    pts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert uniformity(pts) == pytest.approx(math.log((2 * math.exp(-4) + math.exp(-8)) / 3))


def test_alignment__identical_views_are_zero_and_orthogonal_views_by_hand():
    z = torch.randn(10, 5, generator=torch.Generator().manual_seed(0))
    assert alignment(z, 2.0 * z) == pytest.approx(0.0, abs=1e-12)
    a, b = torch.tensor([[1.0, 0.0], [0.0, 3.0]]), torch.tensor([[0.0, 2.0], [0.0, 1.0]])
    assert alignment(a, b) == pytest.approx((2.0 + 0.0) / 2)  # ||e1 - e2||^2 = 2, identical second pair
