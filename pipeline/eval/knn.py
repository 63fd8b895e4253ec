"""Weighted k-NN classifier on cosine similarity (InstDisc/DINO; reference/ssl_eval.md 1.1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def standardize(train_f: torch.Tensor, test_f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Center and scale both sets per dimension with the train set's mean and std (MIM-Refiner's k-NN)."""
    train32 = train_f.float()
    mean, std = train32.mean(0, keepdim=True), train32.std(0, keepdim=True).clamp(min=1e-6)
    return ((train32 - mean) / std).to(train_f.dtype), ((test_f.float() - mean) / std).to(test_f.dtype)


def knn_predict(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, num_classes: int, k: int,
                temperature: float, chunk_size: int) -> torch.Tensor:
    """Predict labels by a vote of the k most cosine-similar train samples, each weighted by exp(sim / T).

    Args:
        train_f: [N, D] bank features (any float dtype; 16-bit halves the memory).
        train_y: [N] int labels of the bank.
        test_f: [M, D] query features.
        num_classes: C.
        k: neighbours per query (capped at N).
        temperature: T of the vote weights.
        chunk_size: queries per similarity block, so memory is chunk_size x N, not M x N.
    Returns:
        [M] predicted labels.
    """
    if train_f.ndim != 2 or test_f.ndim != 2 or train_f.shape[1] != test_f.shape[1]:
        raise ValueError(f"features must be [N, D] and [M, D], got {tuple(train_f.shape)} and {tuple(test_f.shape)}")
    if train_y.shape != train_f.shape[:1]:
        raise ValueError(f"{train_f.shape[0]} bank features but labels of shape {tuple(train_y.shape)}")
    k = min(k, train_f.shape[0])
    bank = F.normalize(train_f.float(), dim=1).to(train_f.dtype)
    preds = []
    for start in range(0, test_f.shape[0], chunk_size):
        query = F.normalize(test_f[start:start + chunk_size].float(), dim=1).to(bank.dtype)
        sim = (query @ bank.T).float()  # [c, N]
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(query.shape[0], num_classes, device=sim.device)
        votes.scatter_add_(1, train_y[top_idx], torch.exp(top_sim / temperature))
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=train_f.device)


def knn_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor, k: int,
                 temperature: float, chunk_size: int = 1024, standardized: bool = False) -> float:
    """Top-1 accuracy (0..1) of `knn_predict` on a labelled query set; `standardized` applies `standardize` first."""
    if standardized:
        train_f, test_f = standardize(train_f, test_f)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    pred = knn_predict(train_f, train_y, test_f, num_classes, k, temperature, chunk_size)
    return float((pred == test_y).float().mean())
