"""Weighted k-NN and its named protocols against brute-force loops, and the probe's block choice."""
from __future__ import annotations

import math

import pytest
import torch

import yaml

from pipeline.config import SCHEMA_PATH
from pipeline.eval.knn import KNN_PROTOCOLS, knn_accuracy, knn_predict, protocol_accuracy, standardize
from pipeline.eval.probe import block_rows, select_block


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


def brute_force_standardize(train_f, test_f, eps=1e-6):
    """Per-dimension (x - mean) / (unbiased std + eps) with the train rows' statistics, by explicit loops."""
    n, d = len(train_f), len(train_f[0])
    mean = [sum(float(train_f[i][j]) for i in range(n)) / n for j in range(d)]
    std = [math.sqrt(sum((float(train_f[i][j]) - mean[j]) ** 2 for i in range(n)) / (n - 1)) + eps for j in range(d)]

    def scale(rows):
        return torch.tensor([[(float(r[j]) - mean[j]) / std[j] for j in range(d)] for r in rows])
    return scale(train_f), scale(test_f)


def scaled_problem(seed):
    """Labels from dimension 1; dimension 0 is label-free noise 100x larger, so the raw cosine follows the noise."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([100.0, 1.0, 1.0])
    train_y, test_y = torch.randint(0, 3, (60,), generator=g), torch.randint(0, 3, (25,), generator=g)
    train_f = (torch.randn(60, 3, generator=g) + torch.stack([torch.zeros(60), 2.0 * train_y, -train_y], 1)) * scale
    test_f = (torch.randn(25, 3, generator=g) + torch.stack([torch.zeros(25), 2.0 * test_y, -test_y], 1)) * scale
    return train_f, train_y, test_f, test_y


def test_knn_protocols__definitions_match_the_references():
    # MIM-Refiner (src/metrics/knn.py): standardized, k=10, exp(sim/0.07); DINO eval_knn: k=20, T=0.07
    assert (KNN_PROTOCOLS["mim_refiner"].k, KNN_PROTOCOLS["mim_refiner"].temperature) == (10, 0.07)
    assert KNN_PROTOCOLS["mim_refiner"].standardize
    assert (KNN_PROTOCOLS["dino"].k, KNN_PROTOCOLS["dino"].temperature, KNN_PROTOCOLS["dino"].standardize) == (
        20, 0.07, False)
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    assert schema["$defs"]["knn_protocol"]["enum"] == list(KNN_PROTOCOLS)


def test_standardize__matches_loops_and_uses_train_statistics_only():
    train_f, _, test_f, _ = scaled_problem(0)
    got_train, got_test = standardize(train_f, test_f)
    ref_train, ref_test = brute_force_standardize(train_f.tolist(), test_f.tolist())
    assert torch.allclose(got_train, ref_train, atol=1e-5) and torch.allclose(got_test, ref_test, atol=1e-5)
    _, shifted_test = standardize(train_f, test_f + 1000.0)  # the queries do not move the statistics
    assert torch.allclose(shifted_test - got_test, 1000.0 / (train_f.std(0) + 1e-6), rtol=1e-4)


def test_protocol_accuracy__mim_refiner_matches_standardized_brute_force():
    train_f, train_y, test_f, test_y = scaled_problem(1)
    ref_train, ref_test = brute_force_standardize(train_f.tolist(), test_f.tolist())
    expected = brute_force_knn(ref_train, train_y, ref_test, 3, 10, 0.07)
    got = protocol_accuracy(train_f, train_y, test_f, test_y, KNN_PROTOCOLS["mim_refiner"], chunk_size=7)
    assert got == pytest.approx(sum(p == int(y) for p, y in zip(expected, test_y)) / len(test_y))
    raw = brute_force_knn(train_f, train_y, test_f, 3, 10, 0.07)
    assert raw != expected, "the case must tell a standardized k-NN from a raw one"
    assert got > sum(p == int(y) for p, y in zip(raw, test_y)) / len(test_y)


def test_protocol_accuracy__dino_matches_raw_brute_force():
    train_f, train_y, test_f, test_y = scaled_problem(2)
    expected = brute_force_knn(train_f, train_y, test_f, 3, 20, 0.07)
    got = protocol_accuracy(train_f, train_y, test_f, test_y, KNN_PROTOCOLS["dino"], chunk_size=4)
    assert got == pytest.approx(sum(p == int(y) for p, y in zip(expected, test_y)) / len(test_y))


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


def test_select_block__best_prefers_shallower_on_ties_and_last():
    assert select_block([0.5, 0.7, 0.7, 0.6], 10**9, "best")["depth"] == 2
    assert select_block([0.5, 0.7, 0.7, 0.6], 10**9, "last")["depth"] == 4
    assert select_block([0.5, 0.7, 0.7, 0.6], 10**9, "one_se")["block"] == 2  # exact tie: the deeper block


def test_select_block__one_se_takes_the_deepest_block_tied_with_the_best():
    # best 0.70 at block 1 on n=1000: SE = sqrt(0.7 * 0.3 / 1000) = 0.01449, so blocks >= 0.68551 are tied
    curve = [0.60, 0.70, 0.69, 0.686, 0.685, 0.60]
    got = select_block(curve, 1000, "one_se")
    assert got["se"] == pytest.approx(math.sqrt(0.21 / 1000))
    assert got["tied_blocks"] == [1, 2, 3] and got["best_block"] == 1  # 0.685 is just outside
    assert (got["block"], got["depth"], got["edge"]) == (3, 4, False)
    assert select_block(curve, 1000, "best")["block"] == 1 and select_block(curve, 1000, "last")["block"] == 5
    # ten times the images: SE 0.00458, only block 1 stays tied, and the rule agrees with the argmax
    assert select_block(curve, 100_000, "one_se")["tied_blocks"] == [1]


def test_select_block__one_se_on_the_default_runs_mae_curve():
    # the committed MAE curve of issue 15 on 5,000 val images: SE 0.66 points; block 2 (67.46) is 0.74 below
    curve = [0.676, 0.682, 0.6746, 0.6678, 0.66, 0.655]
    got = select_block(curve, 5000, "one_se")
    assert got["tied_blocks"] == [0, 1] and got["block"] == 1
    rising = select_block([0.5, 0.6, 0.7], 100, "one_se")
    assert rising["tied_blocks"] == [2] and rising["edge"]  # recorded; the probe does not warn about it


def test_select_block__unknown_rule():
    with pytest.raises(ValueError, match="unknown depth rule 'deepest' \\(known: best, last, one_se\\)"):
        select_block([0.5, 0.6], 100, "deepest")


def test_block_rows__binomial_se_per_block_and_feature():
    rows = block_rows({"cls": [0.5, 0.9], "mean_patch": [0.8, 1.0]}, 400)
    assert rows[0] == {"block": 0, "cls": 0.5, "mean_patch": 0.8, "cls_se": pytest.approx(0.025),
                       "mean_patch_se": pytest.approx(0.02)}
    assert rows[1]["cls_se"] == pytest.approx(0.015) and rows[1]["mean_patch_se"] == 0.0
