"""MoCo's InfoNCE and MoCHi's mixed negatives, by hand."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.objectives.moco import Mixing, info_nce_logits, info_nce_loss, mixed_negatives


def test_info_nce_loss__two_queries_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    queue = torch.tensor([[1.0, 0.0], [-0.8, 0.6]])
    t = 0.5
    rows = [(0.6, [1.0, -0.8]), (1.0, [0.0, 0.6])]  # (q.k, [q.n for the queue])
    expected = sum(-(pos / t) + math.log(sum(math.exp(s / t) for s in [pos, *neg])) for pos, neg in rows) / 2
    assert info_nce_loss(q, k, queue, t).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_loss__gradients_reach_the_query_only():
    g = torch.Generator().manual_seed(0)
    q, k, n = (torch.randn(4, 3, generator=g, requires_grad=True) for _ in range(3))
    info_nce_loss(q, k, n, 0.2).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and n.grad is None


def test_info_nce_logits__synthetic_negatives_are_per_query_columns():
    g = torch.Generator().manual_seed(1)
    q, k, n = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g), torch.randn(5, 4, generator=g)
    extra = F.normalize(torch.randn(3, 2, 4, generator=g), dim=2)
    logits = info_nce_logits(q, k, n, 1.0, extra)
    assert logits.shape == (3, 1 + 5 + 2)
    torch.testing.assert_close(logits[:, 6:], torch.einsum("bd,bmd->bm", F.normalize(q, dim=1), extra))


def _orthonormal_setup():
    # queue entries are the basis vectors e1..e6; the query leans on e1, e2, e3 (its 3 hardest), never on e4..e6
    queue = torch.eye(7)[1:]
    query = torch.tensor([[0.5, 0.6, 0.5, 0.4, 0.0, 0.0, 0.0]])
    return query, queue


def test_mixed_negatives__convex_mixes_of_the_hardest_are_unit_vectors():
    query, queue = _orthonormal_setup()
    mixed = mixed_negatives(query, queue, Mixing(hardest=3, mixes=40, query_mixes=0),
                            torch.Generator().manual_seed(0))[0]  # [40, 7]
    torch.testing.assert_close(mixed.norm(dim=1), torch.ones(40))
    assert (mixed >= 0).all(), "a convex combination of basis vectors has no negative coordinate"
    assert mixed[:, [0, 4, 5, 6]].abs().max() < 1e-7, "only the 3 hardest entries (e1..e3) may be mixed"
    assert ((mixed > 1e-7).sum(dim=1) <= 2).all(), "each mix combines at most two negatives"


def test_mixed_negatives__query_mixes_hold_less_than_half_query():
    query, queue = _orthonormal_setup()
    q = F.normalize(query, dim=1)[0]
    mixed = mixed_negatives(query, queue, Mixing(hardest=3, mixes=0, query_mixes=30),
                            torch.Generator().manual_seed(0))[0]
    torch.testing.assert_close(mixed.norm(dim=1), torch.ones(30))
    for h in mixed:
        # h = normalize(b q + (1 - b) n_j): solve for b q + c n_j over the three hardest candidates
        fits = []
        for j in (1, 2, 3):
            basis = torch.stack([q, torch.eye(7)[j]], dim=1)
            coef = torch.linalg.lstsq(basis, h[:, None]).solution[:, 0]
            fits.append(((basis @ coef - h).norm(), coef))
        residual, (b, c) = min(fits, key=lambda f: f[0])
        assert residual < 1e-5 and b >= 0 and c >= 0 and b <= c + 1e-6, (b, c)


def test_mixed_negatives__counts_and_cap_at_queue_size():
    g = torch.Generator().manual_seed(0)
    out = mixed_negatives(torch.randn(5, 8, generator=g), torch.randn(4, 8, generator=g), Mixing(100, 7, 3), g)
    assert out.shape == (5, 10, 8)


def test_info_nce__bad_inputs():
    with pytest.raises(ValueError, match="temperature"):
        info_nce_loss(torch.ones(2, 3), torch.ones(2, 3), torch.ones(4, 3), 0.0)
    with pytest.raises(ValueError, match="shape"):
        info_nce_loss(torch.ones(2, 3), torch.ones(3, 3), torch.ones(4, 3), 0.1)
