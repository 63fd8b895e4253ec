"""Contrastive Clustering (Li et al., AAAI 2021, arXiv 2009.09687; Yunfan-Li/Contrastive-Clustering).

Contrast in the row and in the column space of the feature matrix. Instance level: NT-Xent over the 2N instance
embeddings of two views (each view's positive is the other view of its image, its negatives the other 2N - 2
views). Cluster level: the same NT-Xent over the 2M columns of the two views' [N, M] assignment matrices (column k
of one view is positive with column k of the other), plus, per view, log M - H(P) of the assignment marginal
P(k) = sum_i Y[i, k] / sum Y, which is 0 for a uniform marginal and log M when every sample sits in one cluster.
Gradients flow through every input; `cc_terms` gathers the views over ranks (the cluster terms need the global
batch, the instance term takes the global batch and scores this rank's rows).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline import distributed


def nt_xent_logits(a: torch.Tensor, b: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The NT-Xent logits of two views and the column of each row's positive.

    Args:
        a, b: [N, D] the two views (row i of a and row i of b are one sample); normalized inside.
        temperature: T > 0.
    Returns:
        logits [2N, 2N]: cosine / T between the stacked rows [a; b], -inf on the diagonal (a row is never its own
        negative); positive [2N]: row i's positive is N + i, row N + i's is i.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"the two views must share one [N, D] shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    x = F.normalize(torch.cat([a, b]).float(), dim=1)
    n = a.shape[0]
    eye = torch.eye(2 * n, dtype=torch.bool, device=x.device)
    logits = (x @ x.T / temperature).masked_fill(eye, float("-inf"))
    rows = torch.arange(n, device=x.device)
    return logits, torch.cat([rows + n, rows])


def nt_xent_loss(a: torch.Tensor, b: torch.Tensor, temperature: float, offset: int = 0,
                 count: int | None = None) -> torch.Tensor:
    """NT-Xent (SimCLR's loss; CC's instance-level loss): mean cross-entropy of the scored rows.

    Args:
        a, b: [N, D] the two views.
        temperature: T > 0.
        offset, count: score rows offset..offset + count of each view (a rank's share of a gathered global batch;
            the negatives still span all 2N rows); count None = all N.
    Returns:
        Scalar loss over 2 * count rows. With all rows collinear every logit is 1/T and the loss is log(2N - 1).
    """
    n = a.shape[0]
    count = n - offset if count is None else count
    if not (0 <= offset and 1 <= count and offset + count <= n):
        raise ValueError(f"rows {offset}..{offset + count} are outside the {n} rows of a view")
    logits, positive = nt_xent_logits(a, b, temperature)
    rows = torch.cat([torch.arange(offset, offset + count), torch.arange(n + offset, n + offset + count)])
    rows = rows.to(logits.device)
    return F.cross_entropy(logits[rows], positive[rows])


def marginal_entropy_gap(assignments: torch.Tensor) -> torch.Tensor:
    """log M - H(P), P(k) = sum_i Y[i, k] / sum Y: 0 for a uniform marginal, log M for one cluster.

    Args:
        assignments: [N, M] cluster probabilities Y (rows sum to 1), M >= 2.
    """
    if assignments.ndim != 2 or assignments.shape[1] < 2:
        raise ValueError(f"assignments must be [N, M >= 2], got {tuple(assignments.shape)}")
    p = assignments.float().sum(0)
    p = p / p.sum()
    # 0 log 0 = 0: an empty cluster adds nothing to the entropy
    return math.log(assignments.shape[1]) + torch.xlogy(p, p).sum()


def cluster_loss(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """CC's cluster-level loss of two views: NT-Xent over the 2M assignment columns plus both views' entropy gaps.

    Args:
        a, b: [N, M] the two views' cluster probabilities over the global batch.
        temperature: tau_C (the paper's 1.0).
    """
    if a.shape != b.shape:
        raise ValueError(f"the two views' assignments must share one [N, M] shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return nt_xent_loss(a.T, b.T, temperature) + marginal_entropy_gap(a) + marginal_entropy_gap(b)


def cc_terms(z: torch.Tensor, y: torch.Tensor, pairs: list[tuple[int, int]], temperature: float,
             cluster_temperature: float) -> tuple[list[torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """Contrastive Clustering's loss terms of one head, per view pair (a, c).

    Args:
        z: [V, B, out] projections (the instance head) of this rank's views.
        y: [V, B, M] cluster probabilities of the same views.
    Returns:
        (terms, pos_mass, {"cluster_entropy"}): per pair, the instance NT-Xent of this rank's rows against the
        global batch plus the cluster loss of the global batch (the same on every rank: its column contrast and
        marginal need every sample; DDP's mean of the ranks' gradients is then the global loss's); the positive's
        softmax mass for views (0, 1); H(P) / log M of view 0's marginal (1 = balanced, 0 = one cluster).
    """
    b = z.shape[1]
    offset = distributed.world().rank * b
    zs = [distributed.gather(t, grad=True) for t in z]
    ys = [distributed.gather(t, grad=True) for t in y]
    terms = [nt_xent_loss(zs[a], zs[c], temperature, offset, b) + cluster_loss(ys[a], ys[c], cluster_temperature)
             for a, c in pairs]
    with torch.no_grad():
        logits, positive = nt_xent_logits(zs[0], zs[1], temperature)
        rows = torch.arange(offset, offset + b, device=logits.device)
        align = torch.softmax(logits[rows], 1).gather(1, positive[rows, None]).mean()
        balance = 1 - marginal_entropy_gap(ys[0]) / math.log(ys[0].shape[1])
    return terms, align, {"cluster_entropy": balance}
