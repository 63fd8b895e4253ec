"""Collapse diagnostics of an embedding set (docs/methods.md): the singular-value spectrum of the
covariance (dimensional collapse, Jing et al. 2022), effective rank (RankMe, Garrido et al. 2023), alignment
and uniformity (Wang & Isola 2020). Every function takes [N, D] features and works in float64.

Both spectra depend on centring and per-channel scale, so they come in three named preprocessings
(`PREPROCESSINGS`): raw (as given; RankMe's definition), centred (minus the mean row; Jing et al.'s covariance)
and standardized (centred, each channel divided by its std: a few dominant channels no longer dominate).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

RANKME_EPS = 1.0e-7  # the paper's epsilon for float32 embeddings
HARD_RANK_TOL = 1.0e-3  # a singular value counts when above this fraction of the largest


PREPROCESSINGS = ("raw", "centred", "standardized")


def preprocess(z: torch.Tensor, how: str) -> torch.Tensor:
    """[N, D] -> [N, D] float64: raw (unchanged), centred (minus the mean row) or standardized (centred, then each
    channel divided by its unbiased std; a constant channel stays 0)."""
    if how not in PREPROCESSINGS:
        raise ValueError(f"unknown preprocessing {how!r} (one of {', '.join(PREPROCESSINGS)})")
    x = z.double()
    if how == "raw":
        return x
    x = x - x.mean(0, keepdim=True)
    if how == "standardized":
        std = x.std(0, keepdim=True)
        x = x / torch.where(std > 0, std, torch.ones_like(std))
    return x


def covariance_spectrum(z: torch.Tensor, how: str = "centred") -> torch.Tensor:
    """Singular values of X^T X / (N - 1), X the L2-normalized rows after `preprocess(., how)`, descending.

    centred is Jing et al.'s spectrum (directclr/spectrum.py: the covariance of the L2-normalized rows); raw is the
    uncentred second moment, standardized the correlation matrix. A collapsed dimension shows as a tail of values
    near 0 on a log scale.
    """
    x = preprocess(F.normalize(z.double(), dim=1), how)
    return torch.linalg.svdvals(x.T @ x / max(x.shape[0] - 1, 1))


def rankme(z: torch.Tensor, eps: float = RANKME_EPS, how: str = "raw") -> float:
    """exp(entropy of p), p_k = sigma_k / ||sigma||_1 + eps, sigma the singular values of `preprocess(z, how)`
    (raw: the paper's definition, Garrido et al. 2023).

    Between 1 (all rows collinear) and min(N, D) (a flat spectrum).
    """
    s = torch.linalg.svdvals(preprocess(z, how))
    p = s / s.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


def hard_rank(spectrum: torch.Tensor, tol: float = HARD_RANK_TOL) -> int:
    """The number of singular values above `tol` times the largest."""
    return int((spectrum > tol * spectrum[0]).sum()) if spectrum.numel() and spectrum[0] > 0 else 0


def alignment(a: torch.Tensor, b: torch.Tensor, alpha: float = 2.0) -> float:
    """E ||f(x) - f(y)||^alpha over positive pairs (row i of `a` with row i of `b`), on L2-normalized rows."""
    x, y = F.normalize(a.double(), dim=1), F.normalize(b.double(), dim=1)
    return float((x - y).norm(dim=1).pow(alpha).mean())


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """log E exp(-t ||f(x) - f(y)||^2) over all pairs of distinct rows, on L2-normalized rows.

    0 for a collapsed set (every pair coincides); about -4 + 8/D for points spread uniformly on a high-D sphere.
    """
    x = F.normalize(z.double(), dim=1)
    return float(torch.pdist(x).pow(2).mul(-t).exp().mean().log())


def spectral_collapse(z: torch.Tensor) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """RankMe and the covariance spectrum of `z` under each preprocessing, with the names saying which.

    Returns:
        ({"rankme_<how>", "hard_rank_<how>", "top_eigen_share_<how>" for how in PREPROCESSINGS}, how -> spectrum).
        top_eigen_share is the largest spectrum value over their sum (1/D for a flat spectrum, 1 for rank 1): one
        dominant direction shows here whatever the rank of the rest.
    """
    spectra = {how: covariance_spectrum(z, how) for how in PREPROCESSINGS}
    scalars: dict[str, float] = {}
    for how, s in spectra.items():
        total = float(s.sum())
        scalars |= {f"rankme_{how}": rankme(z, how=how), f"hard_rank_{how}": hard_rank(s),
                    f"top_eigen_share_{how}": float(s[0]) / total if total > 0 else 0.0}
    return scalars, spectra


def geometry(z: torch.Tensor, view_a: torch.Tensor, view_b: torch.Tensor
             ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The diagnostics of features `z` of clean images; alignment between two augmented views of the same images.

    Returns:
        (`spectral_collapse` scalars with "alignment" and "uniformity", preprocessing -> covariance spectrum).
    """
    scalars, spectra = spectral_collapse(z)
    return scalars | {"alignment": alignment(view_a, view_b), "uniformity": uniformity(z)}, spectra
