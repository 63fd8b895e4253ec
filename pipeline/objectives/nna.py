"""Nearest Neighbor Alignment loss (MIM-Refiner, arXiv 2402.10093; reference/mim_refiner.md 1.3), and NNCLR.

Only the positive is swapped: the positive logit pairs the anchor's nearest neighbour q_i with the prediction
p_i of the other view, while the negatives pair the anchor's own (un-swapped) embedding z_i with the other
predictions p_j. Anchors and neighbours are stop-grad; gradients flow only through the predictions.
NNCLR (the "allswap" ablation of MIM-Refiner) swaps the negatives too: every row uses q_i.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(anchor: torch.Tensor, neighbor: torch.Tensor, pred: torch.Tensor, temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if anchor.ndim != 2 or anchor.shape != neighbor.shape or anchor.shape != pred.shape:
        raise ValueError(f"anchor, neighbor and pred must share one [B, D] shape, got {tuple(anchor.shape)}, "
                         f"{tuple(neighbor.shape)}, {tuple(pred.shape)}")


def nna_logits(anchor: torch.Tensor, neighbor: torch.Tensor, pred: torch.Tensor, temperature: float) -> torch.Tensor:
    """[B, B] logits: diagonal q_i . p_i / T (the swapped positive), off-diagonal z_i . p_j / T (own negatives).

    Args:
        anchor: [B, D] z, the projector outputs of the anchor view (detached inside).
        neighbor: [B, D] q, the nearest neighbours of z in the queue (detached inside).
        pred: [B, D] p, the predictions of the other view (gradients flow here).
        temperature: T > 0.
    """
    _check(anchor, neighbor, pred, temperature)
    z = F.normalize(anchor.detach().float(), dim=1)
    q = F.normalize(neighbor.detach().float(), dim=1)
    p = F.normalize(pred.float(), dim=1)
    logits = z @ p.T
    positive = (q * p).sum(dim=1)
    eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    return torch.where(eye, positive[:, None].expand_as(logits), logits) / temperature


def nna_loss(anchor: torch.Tensor, neighbor: torch.Tensor, pred: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over i of -log softmax_i(nna_logits)[i]: the NNA contrastive loss of one (anchor, prediction) view pair.

    Returns:
        Scalar loss. With all embeddings collinear every logit is 1/T and the loss is log(B).
    """
    logits = nna_logits(anchor, neighbor, pred, temperature)
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def nnclr_loss(anchor: torch.Tensor, neighbor: torch.Tensor, pred: torch.Tensor, temperature: float) -> torch.Tensor:
    """NNCLR: logits q_i . p_j / T for every j (positive and negatives both use the neighbour), CE on the diagonal.

    `anchor` only fixes the shape check: NNCLR never reads the un-swapped embedding.
    """
    _check(anchor, neighbor, pred, temperature)
    return nna_loss(neighbor, neighbor, pred, temperature)


def positive_mass(anchor: torch.Tensor, neighbor: torch.Tensor, pred: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean softmax probability of the positive (the "alignment" MIM-Refiner logs), no gradient."""
    with torch.no_grad():
        return torch.softmax(nna_logits(anchor, neighbor, pred, temperature), dim=1).diagonal().mean()
