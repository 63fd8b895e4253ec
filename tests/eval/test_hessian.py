"""Power iteration with Hessian-vector products on quadratics whose top eigenvalue is known by hand."""
from __future__ import annotations

import pytest
import torch

from pipeline.eval.hessian import top_hessian_eigenvalue


def test_top_hessian_eigenvalue__a_quadratic_with_known_spectrum():
    # loss = 1/2 x^T A x with A = diag(5, 2, 1) (and a second tensor with eigenvalue 0.5): top eigenvalue 5
    x, y = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    a = torch.tensor([5.0, 2.0, 1.0])

    def loss() -> torch.Tensor:
        return 0.5 * (a * x * x).sum() + 0.25 * (y * y).sum()

    out = top_hessian_eigenvalue(loss, [x, y], iterations=200, seed=0, tol=1e-8)
    assert out["eigenvalue"] == pytest.approx(5.0, rel=1e-6) and out["converged"]
    assert out["iterations"] == len(out["history"]) < 200


def test_top_hessian_eigenvalue__a_non_diagonal_hessian_and_a_capped_run():
    # loss = 1/2 x^T A x with A = [[2, 1], [1, 2]]: eigenvalues 3 and 1
    x = torch.tensor([0.3, -1.0], requires_grad=True)
    a = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    out = top_hessian_eigenvalue(lambda: 0.5 * x @ a @ x, [x], iterations=100, seed=1, tol=1e-9)
    assert out["eigenvalue"] == pytest.approx(3.0, rel=1e-6)
    capped = top_hessian_eigenvalue(lambda: 0.5 * x @ a @ x, [x], iterations=1, seed=1, tol=1e-9)
    assert capped["iterations"] == 1 and not capped["converged"]
