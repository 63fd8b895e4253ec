"""Per-block probing: k-NN accuracy of every block's features, and the choice of refinement depth."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from pipeline.data.loader import DeviceImages
from pipeline.data.prepared import Prepared
from pipeline.data.splits import stratified_subset
from pipeline.eval.features import block_features
from pipeline.eval.knn import knn_accuracy
from pipeline.models.vit import ViTEncoder


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


def probe_encoder(encoder: ViTEncoder, bank: DeviceImages, query: DeviceImages, cfg: dict,
                  autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                  ) -> dict[str, list[float]]:
    """k-NN accuracy per block of `encoder` ({pool: [L]}), with the params `probe` section's k, T and sizes.

    Block features are kept in 16-bit on CUDA (half the memory), float32 on the CPU.
    """
    dtype = torch.float16 if bank.images.device.type == "cuda" else torch.float32
    bank_f = block_features(encoder, bank, cfg["batch_size"], dtype, autocast)
    query_f = block_features(encoder, query, cfg["batch_size"], dtype, autocast)
    return probe_blocks(bank_f, bank.labels, query_f, query.labels, cfg["k"], cfg["temperature"], cfg["chunk_size"],
                        cfg["standardize"])


def probe_splits(data: Prepared, bank_limit: int, seed: int, device: torch.device) -> tuple[DeviceImages, DeviceImages]:
    """The k-NN bank (train, or a stratified subset of `bank_limit`; 0 = all) and the validation queries."""
    idx = slice(None)
    if bank_limit and bank_limit < data.y["train"].size:
        idx = stratified_subset(data.y["train"], bank_limit, seed)
    stats = (data.card["mean"], data.card["std"], device)
    return DeviceImages(data.x["train"][idx], data.y["train"][idx], *stats), DeviceImages(data.x["val"],
                                                                                          data.y["val"], *stats)
