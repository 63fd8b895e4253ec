"""MoCo's InfoNCE over a queue of momentum keys, and MoCHi's hard-negative mixing (docs/methods.md).

A query is a prediction of the online network, its positive the momentum key of another view of the same
image, its negatives the queue of earlier keys. MoCHi appends, per query, synthetic negatives mixed from the N
queue entries most similar to it: s mixes of two hard negatives and s' mixes of the query with one (query
share below 1/2). Synthetic negatives are constants (no gradient) and never enter the queue.

`exclude` ([B, K] bool, True = not a negative of that query) removes queue entries from a query's logits and from
its hardest set: MoCHi's class oracle (Kalantidis et al. 2020), which drops the false negatives (queue
entries of the query's class). `negative_top_share` is MoCHi's hardness analysis: how much of the negatives'
softmax mass the hardest few hold.
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
                    generator: torch.Generator | None = None, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """MoCHi's synthetic hard negatives of each query.

    Args:
        query: [B, D] queries (normalized inside).
        negatives: [K, D] queue entries (normalized inside).
        mixing: N, s, s'; N is capped at K.
        generator: the source of the mixing pairs and coefficients, on the query's device (global RNG if None).
        exclude: [B, K] True where an entry is no negative of the query: it never enters the hardest set (a query
            with fewer than N other entries mixes the ones it has).
    Returns:
        [B, s + s', D] unit vectors: normalize(a n_i + (1 - a) n_j), a ~ U(0, 1), then
        normalize(b q + (1 - b) n_j), b ~ U(0, 0.5), with n_i, n_j drawn from the query's N hardest negatives.
    """
    q = F.normalize(query.float(), dim=1)
    n = F.normalize(negatives.float(), dim=1)
    b, dev = q.shape[0], q.device
    sim = q @ n.T
    if exclude is not None:
        sim = sim.masked_fill(exclude, float("-inf"))
    hard = sim.topk(min(mixing.hardest, n.shape[0]), dim=1).indices  # [B, N]
    # each row draws among its first `allowed` hardest (all N unless exclusion left fewer candidates)
    allowed = None if exclude is None else (~exclude).sum(1, keepdim=True).clamp(1, hard.shape[1])

    def draw(count: int) -> torch.Tensor:  # [B, count] entries of each row's hardest set
        if allowed is None:
            pick = distributed.randint(hard.shape[1], b, count, generator=generator, device=dev)
        else:
            pick = (distributed.rand(b, count, generator=generator, device=dev) * allowed).long()
        return n[hard.gather(1, pick)]

    def coefficient(count: int, high: float) -> torch.Tensor:
        return distributed.rand(b, count, 1, generator=generator, device=dev) * high

    a = coefficient(mixing.mixes, 1.0)
    pairs = a * draw(mixing.mixes) + (1 - a) * draw(mixing.mixes)
    beta = coefficient(mixing.query_mixes, 0.5)
    with_query = beta * q[:, None] + (1 - beta) * draw(mixing.query_mixes)
    return F.normalize(torch.cat([pairs, with_query], dim=1), dim=2)


def info_nce_logits(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, temperature: float,
                    extra_negatives: torch.Tensor | None = None, exclude: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """[B, 1 + K (+ M)] logits: column 0 is q_i . k_i / T, then q_i . n / T for the queue (-inf where `exclude`
    [B, K] is True), then the query's own synthetic negatives [B, M, D] if given (-inf for a query whose every
    queue entry is excluded). Keys and negatives are stop-grad;
    gradients reach the query only."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if query.shape != key.shape or query.ndim != 2 or negatives.shape[1:] != query.shape[1:]:
        raise ValueError(f"query and key must share one [B, D] shape and negatives be [K, D], got "
                         f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(negatives.shape)}")
    q = F.normalize(query.float(), dim=1)
    k = F.normalize(key.detach().float(), dim=1)
    n = F.normalize(negatives.detach().float(), dim=1)
    if exclude is not None and exclude.shape != (q.shape[0], n.shape[0]):
        raise ValueError(f"exclude must be [B, K] = {(q.shape[0], n.shape[0])}, got {tuple(exclude.shape)}")
    queue = q @ n.T
    parts = [(q * k).sum(1, keepdim=True), queue if exclude is None else queue.masked_fill(exclude, float("-inf"))]
    if extra_negatives is not None:
        extra = torch.einsum("bd,bmd->bm", q, extra_negatives.detach().float())
        if exclude is not None:  # a query with no negative left has only excluded entries to mix: drop its mixes
            extra = extra.masked_fill(exclude.all(1, keepdim=True), float("-inf"))
        parts.append(extra)
    return torch.cat(parts, dim=1) / temperature


def info_nce_loss(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, temperature: float,
                  mixing: Mixing | None = None, generator: torch.Generator | None = None,
                  exclude: torch.Tensor | None = None) -> torch.Tensor:
    """MoCo's InfoNCE (MoCHi's when `mixing` is given): mean over i of -log softmax(logits_i)[0]; `exclude` [B, K]
    removes queue entries from each query's negatives and hardest set."""
    extra = mixed_negatives(query, negatives, mixing, generator, exclude) if mixing else None
    logits = info_nce_logits(query, key, negatives, temperature, extra, exclude)
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))


TOP_SHARE_FRACTIONS = {"neg_top1_share": 0.01, "neg_top5_share": 0.05}  # MoCHi's top 1% and 5% of negatives


@torch.no_grad()
def negative_top_share(negative_logits: torch.Tensor, fraction: float) -> torch.Tensor:
    """The share of the negatives' softmax mass held by the ceil(fraction * K_i) largest of a query's K_i negatives
    (entries of -inf are not negatives), averaged over queries (MoCHi's hardness analysis, Kalantidis et al. 2020).

    The softmax over the negatives alone gives the same shares as the full softmax with the positive, since the
    normalizer cancels. 1/K-ish hardness is uniform; near 1, a few hard negatives carry the gradient.

    Args:
        negative_logits: [B, K] logits of the negatives of each query.
        fraction: in (0, 1].
    Returns:
        Scalar mean share (rows with no negative count 0).
    """
    if not 0 < fraction <= 1 or negative_logits.ndim != 2:
        raise ValueError(f"need [B, K] logits and a fraction in (0, 1], got {tuple(negative_logits.shape)}, {fraction}")
    probs = torch.softmax(negative_logits.float(), dim=1).nan_to_num(0.0)  # an all -inf row gives NaN: no mass
    counts = torch.isfinite(negative_logits).sum(1)
    top = torch.ceil(fraction * counts).long().clamp(min=1)  # [B]
    cumulative = probs.sort(dim=1, descending=True).values.cumsum(dim=1)  # [B, K]
    return cumulative.gather(1, (top - 1)[:, None]).squeeze(1).mean()
