"""The sklearn C that reproduces MSN's cyanure logistic regression (the `msn` few-shot protocol's MSN_C).

cyanure is not a dependency of the pipeline; this check needs it (`pip install cyanure`, a manylinux wheel):

    python benchmarks/cyanure_check.py

It fits cyanure's multiclass logistic regression (l2, no intercept, λ) on rows preprocessed as MSN does and
sklearn's at C = 1/(n λ) and at C = 1/(2 n λ), and prints the largest difference of their class probabilities.
"""
from __future__ import annotations

import numpy as np
from cyanure.data_processing import preprocess
from cyanure.estimators import Classifier
from sklearn.linear_model import LogisticRegression


def _probs(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    z = x @ w
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def main() -> None:
    rng = np.random.default_rng(0)
    n, d, k = 60, 10, 3
    x, y = rng.normal(size=(n, d)), rng.integers(0, k, n)
    preprocess(x, centering=True, normalize=True, columns=False)  # in place: rows centred and L2-normalized
    lam = 2.5e-4 / n * 50  # MSN's λ = 2.5e-4 / n is weak enough to need many iterations; 50x it converges fast
    cy = Classifier(loss="multiclass-logistic", penalty="l2", lambda_1=lam, fit_intercept=False, max_iter=3000,
                    tol=1e-8, verbose=False).fit(x, y)
    w = np.asarray(cy.coef_)
    for name, c in (("1/(n λ)", 1 / (n * lam)), ("1/(2 n λ)", 1 / (2 * n * lam))):
        sk = LogisticRegression(C=c, fit_intercept=False, max_iter=20000, tol=1e-12).fit(x, y)
        gap = np.abs(_probs(w, x) - _probs(sk.coef_.T, x)).max()
        print(f"C = {name} = {c:g}: max |p_cyanure - p_sklearn| = {gap:.2e}")


if __name__ == "__main__":
    main()
