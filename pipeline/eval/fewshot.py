"""Few-shot evaluation: logistic regression on L2-normalized frozen features, over fixed splits."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def _split_accuracies(train_f, train_y, eval_sets, by_seed, c) -> list[list[float]]:
    """Accuracy on each eval set of one classifier per split: [eval set][split]."""
    accs: list[list[float]] = [[] for _ in eval_sets]
    for _, idx in sorted(by_seed.items()):
        clf = LogisticRegression(C=c, max_iter=2000).fit(train_f[idx], train_y[idx])
        for i, (f, y) in enumerate(eval_sets):
            accs[i].append(float((clf.predict(f) == y).mean()))
    return accs


def fewshot_accuracy(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                     test: tuple[np.ndarray, np.ndarray], splits: dict[int, dict[int, np.ndarray]],
                     cs: list[float]) -> dict[str, dict]:
    """Accuracy for each number of shots, as mean and std over the fixed splits of prepare.

    For each shot count the regularization C is the one with the best mean accuracy on val; test is then read
    once, with the classifiers of that C.

    Args:
        train: features [N, D] and labels of the train split the split indices point into.
        val, test: features and labels of the selection and evaluation sets.
        splits: shots -> seed -> train indices (class-balanced, from fewshot.json).
        cs: candidate inverse L2 strengths of the logistic regression.
    Returns:
        {"<shots>": {"c": chosen C, "mean": .., "std": .., "runs": [..]}} with accuracies in 0..1.
    """
    norm = lambda pair: (l2_normalize(pair[0].astype(np.float64)), pair[1])  # noqa: E731
    (train_f, train_y), val, test = norm(train), norm(val), norm(test)
    out = {}
    for shots, by_seed in sorted(splits.items()):
        val_mean = {c: float(np.mean(_split_accuracies(train_f, train_y, [val], by_seed, c)[0])) for c in cs}
        best = max(cs, key=lambda c: (val_mean[c], -c))
        runs = _split_accuracies(train_f, train_y, [test], by_seed, best)[0]
        out[str(shots)] = {"c": best, "mean": float(np.mean(runs)), "std": float(np.std(runs)), "runs": runs}
    return out
