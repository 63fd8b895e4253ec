"""Per-block probing: k-NN accuracy of every block's features, and the choice of refinement depth."""
from __future__ import annotations

import torch

from pipeline.eval.knn import knn_accuracy


def probe_blocks(bank: dict[str, torch.Tensor], bank_y: torch.Tensor, query: dict[str, torch.Tensor],
                 query_y: torch.Tensor, k: int, temperature: float, chunk_size: int, standardized: bool
                 ) -> dict[str, list[float]]:
    """k-NN accuracy per block for each pooled feature.

    Args:
        bank, query: {pool: [L, N, D]} block features of the bank (train) and query (validation) images.
        bank_y, query_y: labels.
    Returns:
        {pool: [L] accuracies in 0..1}, block 0 first.
    """
    return {pool: [knn_accuracy(bank[pool][b], bank_y, query[pool][b], query_y, k, temperature, chunk_size,
                                standardized) for b in range(bank[pool].shape[0])]
            for pool in bank}


def select_depth(curve: list[float], rule: str) -> int:
    """Blocks to keep for refinement: up to the best block of `curve` (ties -> the shallower), or all.

    Returns:
        A depth in 1..L (the number of blocks kept).
    """
    if rule == "last":
        return len(curve)
    if rule == "best":
        return max(range(len(curve)), key=lambda b: (curve[b], -b)) + 1
    raise ValueError(f"unknown depth rule {rule!r} (known: best, last)")
