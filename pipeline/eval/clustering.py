"""k-means clustering of frozen features, scored by Hungarian-matched accuracy, NMI and ARI."""
from __future__ import annotations

import numpy as np
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


def kmeans_scores(features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int) -> dict[str, float]:
    """Cluster L2-normalized features into `num_classes` groups; score against the labels."""
    x = features.astype(np.float64)
    x /= np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    clusters = KMeans(n_clusters=num_classes, n_init=10, random_state=seed).fit_predict(x)
    return {"acc": hungarian_accuracy(labels, clusters), "nmi": float(normalized_mutual_info_score(labels, clusters)),
            "ari": float(adjusted_rand_score(labels, clusters))}
