"""Validation hold-out and few-shot splits: stratified, class-balanced, fixed by seed."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.splits import fewshot_split, holdout_split, stratified_subset
from pipeline.errors import DataError

LABELS = np.repeat(np.arange(4), [10, 20, 30, 40])


def test_stratified_subset__follows_class_proportions():
    idx = stratified_subset(LABELS, 50, seed=0)
    assert np.bincount(LABELS[idx]).tolist() == [5, 10, 15, 20]
    assert len(np.unique(idx)) == 50


def test_holdout_split__disjoint_and_complete():
    train, val = holdout_split(LABELS, 20, seed=1)
    assert np.intersect1d(train, val).size == 0
    assert np.union1d(train, val).tolist() == list(range(100))
    assert np.bincount(LABELS[val]).tolist() == [2, 4, 6, 8]


def test_fewshot_split__balanced_and_fixed_by_seed():
    a, b, c = fewshot_split(LABELS, 5, 0), fewshot_split(LABELS, 5, 0), fewshot_split(LABELS, 5, 1)
    assert np.bincount(LABELS[a]).tolist() == [5, 5, 5, 5]
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


def test_fewshot_split__more_shots_than_images_in_a_class():
    with pytest.raises(DataError, match="11 shots asked but class 0 has only 10"):
        fewshot_split(LABELS, 11, 0)


def test_holdout_split__val_larger_than_train():
    with pytest.raises(DataError, match="data.val_size=100 leaves no training images"):
        holdout_split(LABELS, 100, 0)
