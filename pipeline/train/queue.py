"""The nearest-neighbour queue of NNA/NNCLR (reference/mim_refiner.md 1.2): a FIFO of projector outputs.

It queries before it pushes, never returns a sample's own entry (matched by dataset index), and keeps its
contents in persistent buffers, so a resumed run continues with the same queue.
"""
from __future__ import annotations

import copy

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
        """Neighbours of `z` [B, D] by cosine similarity, excluding entries of the same dataset index.

        Returns:
            neighbours [B, D] (raw queue entries, detached), their labels [B] (-1 for never-filled slots),
            and their cosine similarities [B].
        """
        sim = F.normalize(z.float(), dim=1) @ F.normalize(self.x.float(), dim=1).T  # [B, K]
        sim = sim.masked_fill(self.idx[None, :] == idx[:, None], -2.0)  # a sample never retrieves itself
        top_sim, top_i = sim.topk(self.topk, dim=1)
        pick = distributed.randint(self.topk, z.shape[0], 1, device=z.device) if self.topk > 1 else \
            torch.zeros(z.shape[0], 1, dtype=torch.long, device=z.device)
        chosen = top_i.gather(1, pick).squeeze(1)
        return self.x[chosen].clone(), self.label[chosen].clone(), top_sim.gather(1, pick).squeeze(1)

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
    """

    def __init__(self, module: nn.Module, momentum: float):
        super().__init__()
        self.module = copy.deepcopy(module).requires_grad_(False)
        self.momentum = momentum

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        """One step of the average toward `online`'s current weights."""
        for avg, cur in zip(self.module.state_dict().values(), online.state_dict().values()):
            if avg.dtype.is_floating_point:
                avg.mul_(self.momentum).add_(cur.detach(), alpha=1 - self.momentum)
            else:
                avg.copy_(cur)
