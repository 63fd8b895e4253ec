"""Weighted k-NN classifiers on cosine similarity, and the named protocols the stages run.

Two protocols, by name (`KNN_PROTOCOLS`; params `probe.knn` and `evaluate.knn_headline` pick from it):
- `mim_refiner`: MIM-Refiner's (ml-jku/MIM-Refiner `src/metrics/knn.py`): each feature
  dimension standardized with the bank's (train split's) mean and std (+1e-6), then L2-normalized; the 10 most
  cosine-similar bank samples vote with weights exp(sim / 0.07), as in DINO.
- `dino`: DINO's `eval_knn.py` (facebookresearch/dino): no standardization, k=20, weights exp(sim / 0.07).
Which features go in is the caller's: the probe passes each block's raw output, as MIM-Refiner's per-block k-NN
(no LayerNorm); evaluate passes the encoder's output, after the final norm (MIM-Refiner's evaluation reads the
last block without it; standardizing undoes that norm's per-dimension affine, not its per-sample scaling).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# added to the std before dividing (MIM-Refiner's knn.py), so a constant dimension does not divide by zero
STANDARDIZE_EPS = 1e-6


@dataclass(frozen=True)
class KnnProtocol:
    """A k-NN evaluation protocol: neighbours, vote temperature, and whether features are standardized first."""

    k: int
    temperature: float
    standardize: bool


KNN_PROTOCOLS: dict[str, KnnProtocol] = {
    "mim_refiner": KnnProtocol(k=10, temperature=0.07, standardize=True),
    "dino": KnnProtocol(k=20, temperature=0.07, standardize=False),
}


def knn_protocol(name: str) -> KnnProtocol:
    """The protocol called `name`; an unknown name raises ValueError listing the known ones."""
    if name not in KNN_PROTOCOLS:
        raise ValueError(f"unknown k-NN protocol {name!r} (known: {', '.join(KNN_PROTOCOLS)})")
    return KNN_PROTOCOLS[name]


def standardize(train_f: torch.Tensor, test_f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Center and scale both sets per dimension with the train set's mean and (unbiased) std + `STANDARDIZE_EPS`.

    Args:
        train_f: [N, D] bank features, the only source of the statistics; test_f: [M, D] query features.
    Returns:
        Both sets standardized, in their input dtypes.
    """
    train32 = train_f.float()
    mean, std = train32.mean(0, keepdim=True), train32.std(0, keepdim=True) + STANDARDIZE_EPS
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


def knn_correct(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor, k: int,
                temperature: float, chunk_size: int = 1024, standardized: bool = False) -> torch.Tensor:
    """[M] bool: whether `knn_predict` gets each query right; `standardized` applies `standardize` first."""
    if standardized:
        train_f, test_f = standardize(train_f, test_f)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    return knn_predict(train_f, train_y, test_f, num_classes, k, temperature, chunk_size) == test_y


def knn_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor, k: int,
                 temperature: float, chunk_size: int = 1024, standardized: bool = False) -> float:
    """Top-1 accuracy (0..1) of `knn_predict` on a labelled query set; `standardized` applies `standardize` first."""
    return float(knn_correct(train_f, train_y, test_f, test_y, k, temperature, chunk_size, standardized).float().mean())


def protocol_correct(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                     protocol: KnnProtocol, chunk_size: int = 1024) -> torch.Tensor:
    """[M] bool per-query correctness of a named protocol's k-NN (`KNN_PROTOCOLS`): train_f [N, D] is the bank."""
    return knn_correct(train_f, train_y, test_f, test_y, protocol.k, protocol.temperature, chunk_size,
                       protocol.standardize)


def protocol_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                      protocol: KnnProtocol, chunk_size: int = 1024) -> float:
    """Top-1 accuracy (0..1) of a named protocol's k-NN (`KNN_PROTOCOLS`): train_f [N, D] is the bank."""
    return float(protocol_correct(train_f, train_y, test_f, test_y, protocol, chunk_size).float().mean())
