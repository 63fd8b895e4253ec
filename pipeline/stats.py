"""The statistics every layer shares: standard errors of accuracies and of their differences, the best of a list and
the values tied with it (the one-standard-error rule).

Accuracies are fractions of n independent images, so an accuracy p has the binomial standard error
sqrt(p (1 - p) / n). Two models' accuracies combine as independent (`difference_se`: conservative when both saw the
same images); where both models scored the same images, their per-image correctness pairs image by image
(`paired_images_se`, McNemar's view: only the images the two models disagree on add noise); the few-shot accuracies
on fixed splits that both models share pair split by split (`paired_se`).
"""
from __future__ import annotations

import math

import numpy as np


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error sqrt(p (1 - p) / n) of an accuracy p measured on n independent images."""
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / n)


def difference_se(a: float, n_a: int, b: float, n_b: int) -> float:
    """Standard error of a - b for accuracies on n_a and n_b images, treated as independent (conservative when both
    models saw the same images)."""
    return math.hypot(binomial_se(a, n_a), binomial_se(b, n_b))


def paired_se(runs_a: list[float], runs_b: list[float]) -> float:
    """Standard error of the mean of per-split differences (0 with one split)."""
    diff = np.asarray(runs_a) - np.asarray(runs_b)
    return float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else 0.0


def correctness_bits(correct) -> str:
    """Per-image correctness (a bool array or tensor) as a compact string of 0 and 1, kept next to an accuracy."""
    return "".join("1" if c else "0" for c in np.asarray(correct, dtype=bool).ravel())


def paired_images_se(bits_a: str, bits_b: str) -> float:
    """Standard error of accuracy a - accuracy b when both models scored the same n images: the standard error of
    the mean per-image difference d_i in {-1, 0, 1}, sqrt(var(d) / n) with the unbiased variance. Images both get
    right or both get wrong add nothing; it is the binomial rule's paired counterpart (McNemar's view).

    Raises:
        ValueError: the two strings do not score the same number of images.
    """
    if len(bits_a) != len(bits_b) or len(bits_a) < 2:
        raise ValueError(f"paired correctness needs two equal lengths >= 2, got {len(bits_a)} and {len(bits_b)}")
    a = np.frombuffer(bits_a.encode(), dtype=np.uint8) - ord("0")
    b = np.frombuffer(bits_b.encode(), dtype=np.uint8) - ord("0")
    diff = a.astype(np.float64) - b
    return float(diff.std(ddof=1) / math.sqrt(diff.size))


def mean_se(values: list[float]) -> float:
    """Standard error of the mean of `values` (at least two): the unbiased std over sqrt(n)."""
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values)) ** 0.5


def means_difference_se(std_a: float, n_a: int, std_b: float, n_b: int) -> float:
    """Standard error of the difference of two independent means, each of n values with standard deviation std."""
    return math.sqrt(std_a ** 2 / n_a + std_b ** 2 / n_b)


def first_argmax(scores: list[float]) -> int:
    """The index of the best score; exact ties go to the first (the shallower block, the smaller grid value)."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def within_one_se(scores: list[float], n: int) -> tuple[int, float, list[int]]:
    """The best of `scores` (accuracies on the same n images), its standard error, and every index within it.

    Returns:
        (index of the best score, the first on exact ties; its binomial SE; ascending indices i with
        scores[i] >= best - SE, the best included).
    """
    best = first_argmax(scores)
    se = binomial_se(scores[best], n)
    return best, se, [i for i, s in enumerate(scores) if s >= scores[best] - se]
