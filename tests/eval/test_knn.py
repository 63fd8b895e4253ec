"""Weighted k-NN against a brute-force loop, and the depth choice."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.eval.knn import knn_accuracy, knn_predict
from pipeline.eval.probe import select_depth


def brute_force_knn(train_f, train_y, test_f, num_classes, k, t):
    preds = []
    for q in test_f:
        sims = [float(q @ x / (q.norm() * x.norm())) for x in train_f]
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * num_classes
        for i in order:
            votes[int(train_y[i])] += math.exp(sims[i] / t)
        preds.append(max(range(num_classes), key=lambda c: votes[c]))
    return preds


def test_knn_predict__matches_brute_force():
    g = torch.Generator().manual_seed(0)
    train_f, test_f = torch.randn(40, 5, generator=g), torch.randn(13, 5, generator=g)
    train_y = torch.randint(0, 3, (40,), generator=g)
    for k, t in ((1, 0.07), (5, 0.1), (20, 0.5)):
        got = knn_predict(train_f, train_y, test_f, 3, k, t, chunk_size=4).tolist()
        assert got == brute_force_knn(train_f, train_y, test_f, 3, k, t)


def test_knn_predict__chunk_size_does_not_change_result():
    g = torch.Generator().manual_seed(1)
    train_f, test_f = torch.randn(30, 4, generator=g), torch.randn(17, 4, generator=g)
    train_y = torch.randint(0, 4, (30,), generator=g)
    a = knn_predict(train_f, train_y, test_f, 4, 7, 0.07, chunk_size=1)
    b = knn_predict(train_f, train_y, test_f, 4, 7, 0.07, chunk_size=1000)
    assert torch.equal(a, b)


def test_knn_predict__weighting_beats_majority_by_hand():
    # query [1, 0]; two class-1 points at cos 0.6 and one class-0 point at cos 1.0; k=3, T=0.1:
    # class 0 gets e^10 = 22026, class 1 gets 2 e^6 = 807 -> class 0, although class 1 has the majority
    train_f = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])
    train_y = torch.tensor([0, 1, 1])
    assert knn_predict(train_f, train_y, torch.tensor([[1.0, 0.0]]), 2, 3, 0.1, 8).tolist() == [0]
    assert knn_predict(train_f, train_y, torch.tensor([[1.0, 0.0]]), 2, 3, 10.0, 8).tolist() == [1]


def test_knn_accuracy__separable_clusters():
    train_f = torch.tensor([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5)
    train_y = torch.tensor([0] * 5 + [1] * 5)
    test_f = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.8, 0.3]])
    assert knn_accuracy(train_f, train_y, test_f, torch.tensor([0, 1, 1]), k=3, temperature=0.07) == pytest.approx(2 / 3)


def test_knn_predict__shape_errors():
    with pytest.raises(ValueError, match=r"\[N, D\] and \[M, D\]"):
        knn_predict(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), torch.randn(2, 5), 2, 1, 0.1, 8)


def test_select_depth__best_prefers_shallower_on_ties_and_last():
    assert select_depth([0.5, 0.7, 0.7, 0.6], "best") == 2
    assert select_depth([0.5, 0.7, 0.7, 0.6], "last") == 4
