"""MFF multi-level feature fusion (arXiv 2308.00261; open-mmlab/mmpretrain mmpretrain/models/selfsup/mff.py).

One Linear(D, D) per fused shallow block, the last block as is, softmax weights over logits initialised to
ones, and a weighted sum. The encoder's final norm is applied after fusion by the caller.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def mff_fuse(features: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of [B, T, D] features with [S] weights that sum to one."""
    if len(features) != weights.shape[0]:
        raise ValueError(f"{len(features)} features but {weights.shape[0]} weights")
    return torch.einsum("s,sbtd->btd", weights.to(features[0].dtype), torch.stack(features))


class MultiLevelFusion(nn.Module):
    """Projects and fuses the outputs of blocks `blocks` (the last of which is the final block).

    Args:
        dim: token width D.
        blocks: 0-based block indices, ascending, at least two.
        learnable: learn the fusion logits (MFF); False keeps the weights uniform (an ablation).
    """

    def __init__(self, dim: int, blocks: list[int], learnable: bool = True):
        super().__init__()
        self.blocks = list(blocks)
        self.proj = nn.ModuleList(nn.Linear(dim, dim) for _ in self.blocks[:-1])
        self.logits = nn.Parameter(torch.ones(len(self.blocks)), requires_grad=learnable)
        for p in self.proj:
            nn.init.xavier_uniform_(p.weight)
            nn.init.zeros_(p.bias)

    def weights(self) -> torch.Tensor:
        """The normalized fusion weights [S] (softmax over the logits)."""
        return torch.softmax(self.logits.float(), dim=0)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """[S] tensors [B, T, D] (block outputs in `blocks` order) -> fused [B, T, D]."""
        projected = [p(f) for p, f in zip(self.proj, features[:-1])] + [features[-1]]
        return mff_fuse(projected, self.weights())
