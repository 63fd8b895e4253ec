"""The two memories of MIM-Refiner's refinement: the nearest-neighbour queue of NNA/NNCLR (ml-jku/MIM-Refiner
nnclr_queue.py), a FIFO of projector outputs, and the EMA of the encoder that evaluation reads.

The queue queries before it pushes, never returns a sample's own entry (matched by dataset index), and keeps its
contents in persistent buffers, so a resumed run continues with the same queue; the EMA saves its update count.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline import distributed


class NNQueue(nn.Module):
    """A ring buffer of K embeddings with their dataset indices and labels.

    Args:
        size: K, the number of entries.
        dim: D, the embedding width.
        topk: the neighbour is drawn uniformly from the top-k most similar entries (1 = the nearest).
    """

    def __init__(self, size: int, dim: int, topk: int = 1):
        super().__init__()
        self.topk = topk
        self.register_buffer("x", torch.randn(size, dim))
        self.register_buffer("idx", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("label", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def query(self, z: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Neighbours of `z` [B, D] by cosine similarity among the filled entries of other dataset indices.

        Never-filled slots (index -1) and the sample's own entries are never returned: the neighbour is drawn
        uniformly from the top min(k, candidates) of the valid entries. A query with no valid entry at all (the
        first step of a run, before any push) gets itself as its neighbour, label -1 and similarity 1, so the first
        step aligns two views of one image rather than a random vector.

        Returns:
            neighbours [B, D] (detached copies), their labels [B] (-1 where the query had no valid entry),
            and their cosine similarities [B].
        """
        valid = (self.idx[None, :] >= 0) & (self.idx[None, :] != idx[:, None])  # [B, K]
        sim = F.normalize(z.float(), dim=1) @ F.normalize(self.x.float(), dim=1).T  # [B, K]
        sim = sim.masked_fill(~valid, float("-inf"))
        k = min(self.topk, self.x.shape[0])
        top_sim, top_i = sim.topk(k, dim=1)
        candidates = valid.sum(1).clamp(max=k)  # [B] valid entries among the top-k
        pick = (distributed.rand(z.shape[0], device=z.device) * candidates.clamp(min=1)).long() if k > 1 else \
            torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        chosen = top_i.gather(1, pick[:, None]).squeeze(1)
        found = candidates > 0
        neighbours = torch.where(found[:, None], self.x[chosen].to(z.dtype), z.detach())
        labels = torch.where(found, self.label[chosen], torch.full_like(chosen, -1))
        sims = torch.where(found, top_sim.gather(1, pick[:, None]).squeeze(1), torch.ones_like(top_sim[:, 0]))
        return neighbours.clone(), labels, sims

    @torch.no_grad()
    def same_class(self, labels: torch.Tensor) -> torch.Tensor:
        """[B] query labels -> [B, K] True where an entry holds a sample of the query's class (the false negatives
        that refine.false_negatives: oracle removes). Never-filled slots (label -1) match no query."""
        return (self.label[None, :] == labels[:, None]) & (self.label[None, :] >= 0)

    @torch.no_grad()
    def push(self, z: torch.Tensor, idx: torch.Tensor, label: torch.Tensor) -> None:
        """Enqueue a batch (detached), overwriting the oldest entries and wrapping around."""
        k, b = self.x.shape[0], z.shape[0]
        if b > k:
            z, idx, label = z[-k:], idx[-k:], label[-k:]
            b = k
        slots = (self.ptr + torch.arange(b, device=z.device)) % k
        self.x[slots] = z.detach().to(self.x.dtype)
        self.idx[slots] = idx
        self.label[slots] = label
        self.ptr.copy_((self.ptr + b) % k)


class EMA(nn.Module):
    """An exponential moving average of a module's parameters and buffers (what evaluation uses).

    Args:
        module: the online module; a deep copy becomes the average.
        momentum: m in avg = m * avg + (1 - m) * online.
        warmup: use min(m, (1 + t) / (10 + t)) at update t (0-based), the warmup of TensorFlow's and timm's model
            EMAs: the early average follows the online weights closely, so a short run does not end with the
            average still holding the starting weights (`start_share` says how much of them is left).
    """

    def __init__(self, module: nn.Module, momentum: float, warmup: bool = False):
        super().__init__()
        self.module = copy.deepcopy(module).requires_grad_(False)
        self.momentum, self.warmup = momentum, warmup
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # saved with the average: resume-exact

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        """One step of the average toward `online`'s current weights."""
        m = ema_momentum(self.momentum, int(self.updates), self.warmup)
        for avg, cur in zip(self.module.state_dict().values(), online.state_dict().values()):
            if avg.dtype.is_floating_point:
                avg.mul_(m).add_(cur.detach(), alpha=1 - m)
            else:
                avg.copy_(cur)
        self.updates += 1


def ema_momentum(momentum: float, t: int, warmup: bool) -> float:
    """The momentum of EMA update t (0-based): m, or min(m, (1 + t) / (10 + t)) with warmup."""
    return min(momentum, (1 + t) / (10 + t)) if warmup else momentum


def start_share(momentum: float, steps: int, warmup: bool) -> float:
    """The weight of the starting module in an EMA after `steps` updates: the product of the momenta
    (m ** steps without warmup). The rest of the average is made of the online weights seen along the way."""
    return math.prod(ema_momentum(momentum, t, warmup) for t in range(steps))
