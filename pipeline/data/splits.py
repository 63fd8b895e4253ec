"""Splits drawn once in prepare: a stratified validation hold-out and fixed few-shot index sets."""
from __future__ import annotations

import numpy as np

from pipeline.errors import DataError


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Pick `size` indices whose class proportions follow `labels` (largest-remainder rounding).

    Args:
        labels: [N] int class ids.
        size: how many indices to draw, 0 < size <= N.
        seed: numpy seed; the same seed gives the same indices.
    Returns:
        Sorted [size] int64 indices into `labels`.
    """
    n = labels.shape[0]
    if not 0 < size <= n:
        raise DataError(f"cannot draw {size} of {n} images")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (size / n)
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take), kind="stable")[: size - take.sum()]:
        take[i] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:t] for c, t in zip(classes, take)]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def holdout_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, val) with a stratified validation set of `val_size`."""
    if val_size >= labels.shape[0]:
        raise DataError(f"data.val_size={val_size} leaves no training images (train split has {labels.shape[0]})")
    val = stratified_subset(labels, val_size, seed)
    train = np.setdiff1d(np.arange(labels.shape[0]), val)
    return train, val


def fewshot_split(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Draw `shots` indices per class, fixed by `seed`.

    Returns:
        Sorted [shots * C] int64 indices into `labels`.
    Raises:
        DataError: a class has fewer than `shots` images.
    """
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if idx.size < shots:
            raise DataError(f"data.fewshot_shots: {shots} shots asked but class {c} has only {idx.size} "
                            f"training images")
        picked.append(rng.choice(idx, size=shots, replace=False))
    return np.sort(np.concatenate(picked)).astype(np.int64)
