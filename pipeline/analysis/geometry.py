"""Collapse diagnostics of an embedding set (reference/ssl_eval.md 2): the singular-value spectrum of the
covariance (dimensional collapse, Jing et al. 2022), effective rank (RankMe, Garrido et al. 2023), alignment
and uniformity (Wang & Isola 2020). Every function takes [N, D] features and works in float64.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

RANKME_EPS = 1.0e-7  # the paper's epsilon for float32 embeddings
HARD_RANK_TOL = 1.0e-3  # a singular value counts when above this fraction of the largest


def covariance_spectrum(z: torch.Tensor) -> torch.Tensor:
    """Singular values of the covariance of the L2-normalized rows, descending (directclr/spectrum.py).

    A collapsed dimension shows as a tail of values near 0 on a log scale.
    """
    x = F.normalize(z.double(), dim=1)
    cov = torch.cov(x.T)
    return torch.linalg.svdvals(cov)


def rankme(z: torch.Tensor, eps: float = RANKME_EPS) -> float:
    """exp(entropy of p), p_k = sigma_k / ||sigma||_1 + eps, sigma the singular values of the raw (uncentered) z.

    Between 1 (all rows collinear) and min(N, D) (a flat spectrum).
    """
    s = torch.linalg.svdvals(z.double())
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


def geometry(z: torch.Tensor, view_a: torch.Tensor, view_b: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
    """The diagnostics of features `z` of clean images; alignment between two augmented views of the same images.

    Returns:
        ({"rankme", "hard_rank", "alignment", "uniformity"}, the covariance spectrum).
    """
    spectrum = covariance_spectrum(z)
    return {"rankme": rankme(z), "hard_rank": hard_rank(spectrum), "alignment": alignment(view_a, view_b),
            "uniformity": uniformity(z)}, spectrum
