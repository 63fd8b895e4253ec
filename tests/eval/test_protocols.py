"""Linear probe, few-shot and clustering metrics against hand-computed and scikit-learn references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from pipeline.eval.clustering import hungarian_accuracy, kmeans_scores
from pipeline.eval.fewshot import fewshot_accuracy
from pipeline.eval.linear import linear_probe, train_linear_heads


def blobs(n_per_class: int, classes: int, dim: int, seed: int, spread: float = 0.1):
    rng = np.random.default_rng(seed)
    centers = np.eye(classes, dim) * 3
    x = np.concatenate([c + spread * rng.standard_normal((n_per_class, dim)) for c in centers])
    y = np.repeat(np.arange(classes), n_per_class)
    return x.astype(np.float32), y


def test_hungarian_accuracy__permuted_clusters_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert hungarian_accuracy(labels, np.array([2, 2, 0, 0, 1, 1])) == 1.0
    # best map: 1->0 (2 right), 0->1 (1 right), 2->2 (1 right) = 4/6; a greedy argmax per cluster cannot beat it
    assert hungarian_accuracy(labels, np.array([1, 1, 0, 1, 2, 0])) == pytest.approx(4 / 6)


def test_kmeans_scores__separable_blobs_are_perfect_and_nmi_matches_sklearn():
    x, y = blobs(30, 4, 8, seed=0)
    scores = kmeans_scores(x, y, 4, seed=0)
    assert scores["acc"] == 1.0 and scores["nmi"] == pytest.approx(1.0) and scores["ari"] == pytest.approx(1.0)
    noisy, _ = blobs(30, 4, 8, seed=1, spread=2.0)
    s = kmeans_scores(noisy, y, 4, seed=0)
    assert 0 < s["nmi"] < 1
    from sklearn.cluster import KMeans
    xn = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    ref = KMeans(4, n_init=10, random_state=0).fit_predict(xn.astype(np.float64))
    assert s["nmi"] == pytest.approx(normalized_mutual_info_score(y, ref))


def test_fewshot_accuracy__mean_and_std_over_splits():
    x, y = blobs(20, 3, 6, seed=0, spread=0.5)
    splits = {1: {0: np.array([0, 20, 40]), 1: np.array([1, 21, 41])}, 2: {0: np.array([0, 1, 20, 21, 40, 41])}}
    out = fewshot_accuracy((x, y), (x, y), (x, y), splits, cs=[1.0, 10.0])
    assert set(out) == {"1", "2"} and len(out["1"]["runs"]) == 2
    assert out["2"]["mean"] == 1.0 and out["1"]["std"] == pytest.approx(np.std(out["1"]["runs"]))


def test_fewshot_accuracy__c_is_picked_on_val_not_test():
    x, y = blobs(20, 3, 6, seed=0, spread=0.5)
    splits = {2: {0: np.array([0, 1, 20, 21, 40, 41])}}
    flipped = (x, (y + 1) % 3)
    a = fewshot_accuracy((x, y), (x, y), (x, y), splits, cs=[1.0e-6, 10.0])
    b = fewshot_accuracy((x, y), (x, y), flipped, splits, cs=[1.0e-6, 10.0])
    assert a["2"]["c"] == b["2"]["c"]
    assert a["2"]["mean"] == 1.0 and b["2"]["mean"] == 0.0


def test_linear_probe__selects_lr_on_val_and_reads_test_once():
    x, y = blobs(40, 3, 5, seed=0, spread=0.5)
    t = (torch.from_numpy(x), torch.from_numpy(y))
    flipped = (t[0], (t[1] + 1) % 3)  # a "test" set whose labels are wrong must not change the choice
    # 1e-7 leaves the head at its random init (near chance); 0.1 separates the blobs
    torch.manual_seed(0)  # the head's init draws from the global generator, which the stage seeds
    a = linear_probe(t, t, t, 3, [1.0e-7, 0.1], epochs=20, batch_size=32, weight_decay=0.0, seed=0)
    torch.manual_seed(0)
    b = linear_probe(t, t, flipped, 3, [1.0e-7, 0.1], epochs=20, batch_size=32, weight_decay=0.0, seed=0)
    assert a["lr"] == b["lr"] == 0.1
    assert a["val"]["0.1"] == 1.0 and a["val"]["1e-07"] < 0.9 and a["test"] == 1.0 and b["test"] == 0.0
    assert a["selection"]["grid"] == [1.0e-7, 0.1] and a["selection"]["pick"] == 0.1
    assert a["selection"]["edge"] and a["selection"]["key"] == "evaluate.linear.lrs"


def test_train_linear_heads__each_head_equals_its_lr_trained_alone():
    x, y = blobs(30, 3, 5, seed=1, spread=1.0)
    f, t = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    together = train_linear_heads(f, t, 3, [0.05, 3.0], epochs=3, batch_size=16, weight_decay=1.0e-4, seed=0)
    torch.manual_seed(0)  # the first head's init is the first draw either way
    alone = train_linear_heads(f, t, 3, [0.05], epochs=3, batch_size=16, weight_decay=1.0e-4, seed=0)
    for p_together, p_alone in zip(together[0].parameters(), alone[0].parameters()):
        assert torch.allclose(p_together, p_alone, atol=1e-6)
    assert torch.allclose(together[0][0].running_mean, alone[0][0].running_mean)
    assert not torch.allclose(together[0][1].weight, together[1][1].weight)



def test_fewshot_accuracy__per_dimension_scale_does_not_change_the_result():
    # features are standardized with the train split's statistics: a dimension in other units changes nothing
    x, y = blobs(20, 3, 6, seed=2, spread=1.5)
    scaled = x * np.array([1000.0, 1.0, 0.001, 1.0, 1.0, 1.0], dtype=np.float32)
    splits = {1: {0: np.array([0, 20, 40]), 1: np.array([3, 23, 43])}, 2: {0: np.array([0, 1, 20, 21, 40, 41])}}
    a = fewshot_accuracy((x, y), (x, y), (x, y), splits, cs=[0.1, 10.0, 1000.0])
    b = fewshot_accuracy((scaled, y), (scaled, y), (scaled, y), splits, cs=[0.1, 10.0, 1000.0])
    assert {k: v["c"] for k, v in a.items()} == {k: v["c"] for k, v in b.items()}
    assert {k: v["runs"] for k, v in a.items()} == {k: v["runs"] for k, v in b.items()}
    assert a["1"]["selection"]["rule"] == "one_se" and a["1"]["selection"]["key"] == "evaluate.fewshot_cs"


def test_msn_features__rows_centred_over_their_own_dims_then_unit_length():
    from pipeline.eval.fewshot import msn_features

    (out,) = msn_features(np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 6.0]]))
    np.testing.assert_allclose(out[0], [-1 / np.sqrt(2), 0.0, 1 / np.sqrt(2)])  # [1,2,3] - 2 = [-1,0,1]
    np.testing.assert_allclose(out[1], np.array([-1.0, -1.0, 2.0]) / np.sqrt(6))  # [2,2,6] - 10/3, scaled


def test_fewshot_msn__fixed_c_no_selection_and_the_same_fit_as_by_hand():
    from sklearn.linear_model import LogisticRegression

    from pipeline.eval.fewshot import MSN_C, fewshot_msn, msn_features

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 3
    y_train, y_test = np.repeat(np.arange(3), 20), np.repeat(np.arange(3), 10)
    x_train = centres[y_train] + rng.normal(size=(60, 8))
    x_test = centres[y_test] + rng.normal(size=(30, 8))
    splits = {1: {0: np.array([0, 20, 40]), 1: np.array([1, 21, 41])}, 2: {0: np.array([2, 3, 22, 23, 42, 43])}}
    out = fewshot_msn((x_train, y_train), (x_test, y_test), splits)
    assert MSN_C == 4000.0 and set(out) == {"1", "2"} and "selection" not in out["1"]
    assert out["1"]["c"] == MSN_C and len(out["1"]["runs"]) == 2
    f_train, f_test = msn_features(x_train, x_test)
    idx = splits[1][1]
    clf = LogisticRegression(C=4000.0, fit_intercept=False, max_iter=2000).fit(f_train[idx], y_train[idx])
    assert out["1"]["runs"][1] == float((clf.predict(f_test) == y_test).mean())
    assert out["1"]["mean"] == pytest.approx(np.mean(out["1"]["runs"]))


def test_augmented_linear_probe__a_grid_of_four_features_picked_on_val_and_read_once_on_test():
    from pipeline.data.loader import DeviceImages
    from pipeline.eval.linear_augmented import GRID, augmented_linear_probe, grid_features, warmup_cosine_factor
    from pipeline.models.vit import ViTEncoder

    assert warmup_cosine_factor(0, 10, 2) == 0.0 and warmup_cosine_factor(1, 10, 2) == 0.5
    assert warmup_cosine_factor(2, 10, 2) == 1.0 and warmup_cosine_factor(6, 10, 2) == pytest.approx(0.5)
    torch.manual_seed(0)
    encoder = ViTEncoder(8, 2, 1, 16, 5, 2)
    feats = grid_features(encoder, torch.randn(3, 1, 8, 8))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "cls_last1": (3, 16), "cls_mean_last1": (3, 32), "cls_last4": (3, 64), "cls_mean_last4": (3, 128)}
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    x = (rng.normal(size=(120, 8, 8, 1)) * 20 + 100 + 40 * labels[:, None, None, None]).clip(0, 255).astype(np.uint8)
    cpu = torch.device("cpu")
    splits = {s: DeviceImages(x, labels, [0.4], [0.2], cpu) for s in ("train", "val", "test")}
    cfg = {"lrs": [0.01, 1.0], "epochs": 2, "batch_size": 32, "weight_decay": 0.0, "crop_scale_min": 0.5,
           "warmup_fraction": 0.25}
    out = augmented_linear_probe(encoder, splits, 3, cfg, 64, seed=0)
    again = augmented_linear_probe(encoder, splits, 3, cfg, 64, seed=0)
    assert out == again  # seeded crops, order and heads
    assert out["mode"] == "augmented" and out["feature"] in GRID and set(out["grid"]) == set(GRID)
    assert out["grid"][out["feature"]]["val"] == max(g["val"] for g in out["grid"].values())
    assert out["lr"] == out["grid"][out["feature"]]["lr"] and len(out["test_correct"]) == 120
    assert out["test"] == out["test_correct"].count("1") / 120
