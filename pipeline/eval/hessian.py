"""The sharpness of a loss at given weights: its Hessian's largest eigenvalue by power iteration with
Hessian-vector products (MFF, arXiv 2308.00261, compares MAE's and MFF-MAE's to argue MFF's loss is flatter)."""
from __future__ import annotations

from typing import Callable

import torch


def _normalized(vs: list[torch.Tensor]) -> list[torch.Tensor]:
    norm = torch.sqrt(sum((v * v).sum() for v in vs))
    return [v / norm for v in vs]


def top_hessian_eigenvalue(loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor], iterations: int,
                           seed: int, tol: float = 1.0e-3) -> dict:
    """The eigenvalue of largest magnitude of the Hessian of `loss_fn()` at `params`, by power iteration.

    Each step is one Hessian-vector product, the gradient of (gradient . v) (Pearlmutter 1994), on the same loss
    (fixed batches and masks inside `loss_fn`), from a seeded random start; the estimate is the Rayleigh quotient
    v.Hv of the unit vector v. It stops when the estimate changes by less than `tol` (relative) or after
    `iterations` steps.

    Returns:
        {"eigenvalue", "iterations" (run), "converged", "relative_change" (of the last step), "history" (every
        estimate)}.
    """
    gen = torch.Generator().manual_seed(seed)
    v = _normalized([torch.randn(p.shape, generator=gen).to(p) for p in params])
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
    history: list[float] = []
    change = float("inf")
    for _ in range(iterations):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True, allow_unused=True)
        hv = [h if h is not None else torch.zeros_like(p) for h, p in zip(hv, params)]
        estimate = float(sum((h * x).sum() for h, x in zip(hv, v)))
        if history:
            change = abs(estimate - history[-1]) / max(abs(estimate), 1e-12)
        history.append(estimate)
        v = _normalized([h.detach() for h in hv])
        if change < tol:
            break
    return {"eigenvalue": history[-1], "iterations": len(history), "converged": change < tol,
            "relative_change": change, "history": history}
