"""Few-shot evaluation over the fixed splits, by named protocol (FEWSHOT_PROTOCOLS), like the k-NN ones:

- tuned: features standardized with the train split's statistics and L2-normalized, logistic regression without
  intercept, C picked per shot count on val by the one-standard-error rule (`fewshot_accuracy`);
- msn: MSN's and MIM-Refiner's published protocol (facebookresearch/msn logistic_eval.py): each row centred over its
  own dimensions and L2-normalized (cyanure `preprocess(centering=True, normalize=True, columns=False)`), no
  intercept, cyanure's λ = 2.5e-4 / n, no selection (`fewshot_msn`).
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from pipeline.eval.knn import STANDARDIZE_EPS
from pipeline.eval.selection import grid_pick


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def fewshot_features(train_f: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Standardize every set per dimension with the whole (unlabelled) train split's mean and std, then L2-normalize
    each row; float64 for the solver.

    MSN's protocol (facebookresearch/msn; cyanure `preprocess(centering=True, normalize=True)`) centers and
    L2-normalizes each row and fits without intercept (kept here). Centering a row does not remove a direction
    that every feature shares, and MAE features can have one (RankMe 2.3 after L2 normalization in the default run
    of commit ac12c4d): the samples then differ by a small residual that only a very weak L2 penalty can fit, and
    that run picked the largest C of its grid at every shot count. Per-dimension standardization with the train
    split's statistics, the transform of the mim_refiner k-NN (pipeline/eval/knn.py), removes it; it reads no
    labels, and val and test use the train statistics.

    Args:
        train_f: [N, D] features of the whole train split (the statistics); others: further [M, D] sets.
    Returns:
        [train, *others], each [., D] float64.
    """
    x = train_f.astype(np.float64)
    mean, std = x.mean(0), x.std(0, ddof=1) + STANDARDIZE_EPS
    return [l2_normalize((f.astype(np.float64) - mean) / std) for f in (x, *others)]


FEWSHOT_PROTOCOLS = ("tuned", "msn")
# cyanure minimizes (1/n) Σ loss + (λ/2)|w|², sklearn C Σ loss + ½|w|²: C = 1 / (n λ), so MSN's λ = 2.5e-4 / n is
# C = 4000 at any n (checked against cyanure 1.2.2 by benchmarks/cyanure_check.py: equal probabilities to 1e-7)
MSN_C = 1.0 / 2.5e-4


def msn_features(*sets: np.ndarray) -> list[np.ndarray]:
    """Each row centred over its own dimensions, then L2-normalized (no dataset statistics); float64."""
    out = []
    for f in sets:
        x = f.astype(np.float64)
        out.append(l2_normalize(x - x.mean(axis=1, keepdims=True)))
    return out


def fewshot_msn(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                splits: dict[int, dict[int, np.ndarray]]) -> dict[str, dict]:
    """MSN's few-shot protocol: `msn_features`, logistic regression without intercept at C = MSN_C on each split,
    test accuracy as mean and std over the splits; no val, no selection.

    Returns:
        {"<shots>": {"c": MSN_C, "mean": .., "std": .., "runs": [..]}} with accuracies in 0..1.
    """
    train_f, test_f = msn_features(train[0], test[0])
    out = {}
    for shots, by_seed in sorted(splits.items()):
        runs = _split_accuracies(train_f, train[1], [(test_f, test[1])], by_seed, MSN_C)[0]
        out[str(shots)] = {"c": MSN_C, "mean": float(np.mean(runs)), "std": float(np.std(runs)), "runs": runs}
    return out


def _split_accuracies(train_f, train_y, eval_sets, by_seed, c) -> list[list[float]]:
    """Accuracy on each eval set of one classifier per split: [eval set][split]."""
    accs: list[list[float]] = [[] for _ in eval_sets]
    for _, idx in sorted(by_seed.items()):
        clf = LogisticRegression(C=c, fit_intercept=False, max_iter=2000).fit(train_f[idx], train_y[idx])
        for i, (f, y) in enumerate(eval_sets):
            accs[i].append(float((clf.predict(f) == y).mean()))
    return accs


def fewshot_accuracy(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                     test: tuple[np.ndarray, np.ndarray], splits: dict[int, dict[int, np.ndarray]],
                     cs: list[float], grid_key: str = "evaluate.fewshot_cs") -> dict[str, dict]:
    """Accuracy for each number of shots, as mean and std over the fixed splits of prepare.

    Features go through `fewshot_features`; the classifier is an L2-penalized logistic regression without
    intercept (as MSN's). For each shot count, C is chosen on val by the one-standard-error rule
    (`selection.grid_pick`, rule one_se): the smallest C whose mean val accuracy is within one binomial SE of the
    best. Above some C the accuracy is flat (the fit approaches the unregularized one), and the argmax on that
    plateau is val noise. Test is then read once, with the classifiers of that C.

    Args:
        train: features [N, D] and labels of the train split the split indices point into.
        val, test: features and labels of the selection and evaluation sets.
        splits: shots -> seed -> train indices (class-balanced, from fewshot.json).
        cs: candidate inverse L2 strengths (at least two); grid_key: their params key, named on an edge pick.
    Returns:
        {"<shots>": {"c": chosen C, "mean": .., "std": .., "runs": [..], "selection": the grid_pick record}}
        with accuracies in 0..1.
    """
    train_f, val_f, test_f = fewshot_features(train[0], val[0], test[0])
    train_y, val_set, test_set = train[1], (val_f, val[1]), (test_f, test[1])
    out = {}
    for shots, by_seed in sorted(splits.items()):
        val_mean = {c: float(np.mean(_split_accuracies(train_f, train_y, [val_set], by_seed, c)[0])) for c in cs}
        selection = grid_pick(val_mean, grid_key, len(val[1]), "one_se")
        best = selection["pick"]
        runs = _split_accuracies(train_f, train_y, [test_set], by_seed, best)[0]
        out[str(shots)] = {"c": best, "mean": float(np.mean(runs)), "std": float(np.std(runs)), "runs": runs,
                           "selection": selection}
    return out
