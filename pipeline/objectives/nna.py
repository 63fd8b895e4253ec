"""Nearest Neighbor Alignment loss (MIM-Refiner, arXiv 2402.10093; its src/losses/ssl/nnclr_loss.py), and NNCLR.

Only the positive is swapped: the positive logit pairs the anchor's nearest neighbour q_i with the prediction
p_i of the other view, while the negatives pair the anchor's own (un-swapped) embedding z_i with the other
predictions p_j. Anchors and neighbours are stop-grad; gradients flow only through the predictions.
NNCLR (the "allswap" ablation of MIM-Refiner) swaps the negatives too: every row uses q_i.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(anchor: torch.Tensor, neighbor: torch.Tensor, pred: torch.Tensor, temperature: float, offset: int) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if (anchor.ndim != 2 or anchor.shape != neighbor.shape or pred.ndim != 2 or pred.shape[1] != anchor.shape[1]
            or not 0 <= offset <= pred.shape[0] - anchor.shape[0]):
        raise ValueError(f"anchor and neighbor must be [B, D] and pred [N >= offset + B, D], got "
                         f"{tuple(anchor.shape)}, {tuple(neighbor.shape)}, {tuple(pred.shape)} (offset {offset})")


def nna_logits(anchor: torch.Tensor, neighbor: torch.Tensor, pred: torch.Tensor, temperature: float,
               offset: int = 0) -> torch.Tensor:
    """[B, N] logits: at (i, offset + i) q_i . p_i / T (the swapped positive), elsewhere z_i . p_j / T (own negatives).

    Args:
        anchor: [B, D] z, the projector outputs of the anchor view (detached inside).
        neighbor: [B, D] q, the nearest neighbours of z in the queue (detached inside).
        pred: [N, D] p, the predictions of the other view for the global batch (gradients flow here); N = B for
            one process, the gathered batch of every rank under torchrun.
        temperature: T > 0.
        offset: where this rank's rows sit in the global batch.
    """
    _check(anchor, neighbor, pred, temperature, offset)
    z = F.normalize(anchor.detach().float(), dim=1)
    q = F.normalize(neighbor.detach().float(), dim=1)
    p = F.normalize(pred.float(), dim=1)
    logits = z @ p.T
    rows = torch.arange(z.shape[0], device=z.device)
    positive = (q * p[rows + offset]).sum(dim=1)
    return logits.index_put((rows, rows + offset), positive) / temperature


def nna_loss(anchor: torch.Tensor, neighbor: torch.Tensor, pred: torch.Tensor, temperature: float,
             offset: int = 0) -> torch.Tensor:
    """Mean over i of -log softmax_i(nna_logits)[offset + i]: the NNA loss of one (anchor, prediction) view pair.

    Returns:
        Scalar loss. With all embeddings collinear every logit is 1/T and the loss is log(N).
    """
    logits = nna_logits(anchor, neighbor, pred, temperature, offset)
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device) + offset)


def nnclr_loss(anchor: torch.Tensor, neighbor: torch.Tensor, pred: torch.Tensor, temperature: float,
               offset: int = 0) -> torch.Tensor:
    """NNCLR: logits q_i . p_j / T for every j (positive and negatives both use the neighbour), CE at offset + i.

    `anchor` only fixes the shape check: NNCLR never reads the un-swapped embedding.
    """
    _check(anchor, neighbor, pred, temperature, offset)
    return nna_loss(neighbor, neighbor, pred, temperature, offset)


def positive_mass(anchor: torch.Tensor, neighbor: torch.Tensor, pred: torch.Tensor, temperature: float,
                  offset: int = 0) -> torch.Tensor:
    """Mean softmax probability of the positive (the "alignment" MIM-Refiner logs), no gradient."""
    with torch.no_grad():
        logits = nna_logits(anchor, neighbor, pred, temperature, offset)
        rows = torch.arange(logits.shape[0], device=logits.device)
        return torch.softmax(logits, dim=1)[rows, rows + offset].mean()
