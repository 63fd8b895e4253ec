"""RankMe and the covariance spectrum under each preprocessing, on matrices whose spectra are known by hand."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.eval.collapse import embedding_metrics
from pipeline.eval.geometry import covariance_spectrum, preprocess, rankme, spectral_collapse


def test_rankme__three_orthogonal_rows_are_rank_three_raw_and_two_centred():
    # rows e1, e2, e3 (each 4 times) in 5 dimensions: three equal singular values, so RankMe raw = 3; centring removes
    # the mean (1/3, 1/3, 1/3, 0, 0) and leaves the symmetric 2-d simplex: two equal singular values, RankMe 2
    z = torch.eye(5)[:3].repeat(4, 1)
    assert rankme(z, how="raw") == pytest.approx(3.0, rel=1e-5)
    assert rankme(z, how="centred") == pytest.approx(2.0, rel=1e-5)
    assert rankme(z, how="standardized") == pytest.approx(2.0, rel=1e-5)  # the three channels have one std


def test_rankme__standardization_removes_one_dominant_channel():
    # rows (a, 0), (-a, 0), (0, b), (0, -b): mean 0, singular values sqrt(2) a and sqrt(2) b
    a, b = 100.0, 1.0
    z = torch.tensor([[a, 0.0], [-a, 0.0], [0.0, b], [0.0, -b]])
    p = torch.tensor([a / (a + b), b / (a + b)]) + 1.0e-7
    by_hand = math.exp(-float((p * p.log()).sum()))  # about 1.06: one channel holds the spectrum
    assert rankme(z, how="raw") == pytest.approx(by_hand, rel=1e-6)
    assert rankme(z, how="centred") == pytest.approx(by_hand, rel=1e-6)
    # each channel divided by its std (a sqrt(2/3), b sqrt(2/3)): two equal singular values
    assert rankme(z, how="standardized") == pytest.approx(2.0, rel=1e-5)


def test_covariance_spectrum__centred_is_jings_covariance_and_standardized_has_unit_diagonal():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(400, 6, generator=g, dtype=torch.float64) + 3.0
    x = torch.nn.functional.normalize(z, dim=1)
    torch.testing.assert_close(covariance_spectrum(z, "centred"), torch.linalg.svdvals(torch.cov(x.T)))
    torch.testing.assert_close(covariance_spectrum(z, "raw"), torch.linalg.svdvals(x.T @ x / 399))
    # a correlation matrix: its eigenvalues sum to its trace, the width
    assert float(covariance_spectrum(z, "standardized").sum()) == pytest.approx(6.0)


def test_spectral_collapse__dominant_channel_share_falls_after_standardization():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 8, generator=g)
    z[:, 0] *= 100.0
    scalars, spectra = spectral_collapse(z)
    assert set(spectra) == {"raw", "centred", "standardized"}
    assert scalars["top_eigen_share_centred"] > 0.9, "one channel holds the centred covariance"
    assert scalars["top_eigen_share_standardized"] < 0.3, "a correlation matrix of independent channels is flat"
    assert scalars["rankme_raw"] < 2.0 < 7.5 < scalars["rankme_standardized"] <= 8.0


def test_spectral_collapse__rank_r_matrix():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(300, 3, generator=g) @ torch.randn(3, 12, generator=g)  # rank 3 in 12 dimensions
    scalars, _ = spectral_collapse(z)
    for how in ("raw", "centred", "standardized"):
        assert scalars[f"hard_rank_{how}"] <= 3
        assert scalars[f"rankme_{how}"] <= 3.0 + 1e-3


def test_preprocess__unknown_name():
    with pytest.raises(ValueError, match="unknown preprocessing 'whitened'"):
        preprocess(torch.ones(2, 2), "whitened")


def test_embedding_metrics__are_named_as_the_embeddings():
    assert embedding_metrics({"rankme_raw": 2.0, "uniformity": -1.0}) == {"embedding_rankme_raw": 2.0,
                                                                         "embedding_uniformity": -1.0}
