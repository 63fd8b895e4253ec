"""MoCo's InfoNCE over a queue of momentum keys, and MoCHi's hard-negative mixing (reference/ssl_eval.md 4).

A query is a prediction of the online network, its positive the momentum key of another view of the same
image, its negatives the queue of earlier keys. MoCHi appends, per query, synthetic negatives mixed from the N
queue entries most similar to it: s mixes of two hard negatives and s' mixes of the query with one (query
share below 1/2). Synthetic negatives are constants (no gradient) and never enter the queue.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline import distributed


@dataclass(frozen=True)
class Mixing:
    """MoCHi(N, s, s'): N hardest queue entries per query, s mixes of two of them, s' mixes with the query."""

    hardest: int
    mixes: int
    query_mixes: int


@torch.no_grad()
def mixed_negatives(query: torch.Tensor, negatives: torch.Tensor, mixing: Mixing,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """MoCHi's synthetic hard negatives of each query.

    Args:
        query: [B, D] queries (normalized inside).
        negatives: [K, D] queue entries (normalized inside).
        mixing: N, s, s'; N is capped at K.
        generator: the source of the mixing pairs and coefficients, on the query's device (global RNG if None).
    Returns:
        [B, s + s', D] unit vectors: normalize(a n_i + (1 - a) n_j), a ~ U(0, 1), then
        normalize(b q + (1 - b) n_j), b ~ U(0, 0.5), with n_i, n_j drawn from the query's N hardest negatives.
    """
    q = F.normalize(query.float(), dim=1)
    n = F.normalize(negatives.float(), dim=1)
    b, dev = q.shape[0], q.device
    hard = (q @ n.T).topk(min(mixing.hardest, n.shape[0]), dim=1).indices  # [B, N]

    def draw(count: int) -> torch.Tensor:  # [B, count] entries of each row's hardest set
        pick = distributed.randint(hard.shape[1], b, count, generator=generator, device=dev)
        return n[hard.gather(1, pick)]

    def coefficient(count: int, high: float) -> torch.Tensor:
        return distributed.rand(b, count, 1, generator=generator, device=dev) * high

    a = coefficient(mixing.mixes, 1.0)
    pairs = a * draw(mixing.mixes) + (1 - a) * draw(mixing.mixes)
    beta = coefficient(mixing.query_mixes, 0.5)
    with_query = beta * q[:, None] + (1 - beta) * draw(mixing.query_mixes)
    return F.normalize(torch.cat([pairs, with_query], dim=1), dim=2)


def info_nce_logits(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, temperature: float,
                    extra_negatives: torch.Tensor | None = None) -> torch.Tensor:
    """[B, 1 + K (+ M)] logits: column 0 is q_i . k_i / T, then q_i . n / T for the queue, then the query's own
    synthetic negatives [B, M, D] if given. Keys and negatives are stop-grad; gradients reach the query only."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if query.shape != key.shape or query.ndim != 2 or negatives.shape[1:] != query.shape[1:]:
        raise ValueError(f"query and key must share one [B, D] shape and negatives be [K, D], got "
                         f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(negatives.shape)}")
    q = F.normalize(query.float(), dim=1)
    k = F.normalize(key.detach().float(), dim=1)
    n = F.normalize(negatives.detach().float(), dim=1)
    parts = [(q * k).sum(1, keepdim=True), q @ n.T]
    if extra_negatives is not None:
        parts.append(torch.einsum("bd,bmd->bm", q, extra_negatives.detach().float()))
    return torch.cat(parts, dim=1) / temperature


def info_nce_loss(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, temperature: float,
                  mixing: Mixing | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """MoCo's InfoNCE (MoCHi's when `mixing` is given): mean over i of -log softmax(logits_i)[0]."""
    extra = mixed_negatives(query, negatives, mixing, generator) if mixing else None
    logits = info_nce_logits(query, key, negatives, temperature, extra)
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))
