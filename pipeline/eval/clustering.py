"""k-means clustering of frozen features, and the assignments of a trained cluster head (Contrastive Clustering),
scored by Hungarian-matched accuracy, NMI and ARI."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def hungarian_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Accuracy under the one-to-one cluster -> class map that maximizes it (Hungarian matching)."""
    k = int(max(labels.max(), clusters.max())) + 1
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / labels.size)


def assignment_scores(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """{"acc" (Hungarian), "nmi", "ari"} of [N] cluster ids against [N] labels (any number of clusters)."""
    return {"acc": hungarian_accuracy(labels, clusters), "nmi": float(normalized_mutual_info_score(labels, clusters)),
            "ari": float(adjusted_rand_score(labels, clusters))}


def kmeans_scores(features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int) -> dict[str, float]:
    """Cluster L2-normalized features into `num_classes` groups; score against the labels."""
    x = features.astype(np.float64)
    x /= np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    clusters = KMeans(n_clusters=num_classes, n_init=10, random_state=seed).fit_predict(x)
    return assignment_scores(labels, clusters)


@torch.no_grad()
def cluster_head_scores(head: Callable[[torch.Tensor], torch.Tensor], features: torch.Tensor,
                        labels: torch.Tensor) -> dict[str, float]:
    """Score a cluster head's own assignments (argmax of its [N, M] probabilities; arXiv 2009.09687).

    Args:
        head: [N, D] features -> [N, M] cluster probabilities (in eval mode).
        features: [N, D] the features the head was trained on (the encoder's CLS output).
        labels: [N] class labels.
    Returns:
        assignment_scores(...) and "used": how many of the M clusters hold a sample (1 = collapsed).
    """
    clusters = head(features).argmax(dim=1).cpu().numpy()
    return assignment_scores(labels.cpu().numpy(), clusters) | {"used": float(np.unique(clusters).size)}
