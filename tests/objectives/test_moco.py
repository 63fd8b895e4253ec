"""MoCo's InfoNCE and MoCHi's mixed negatives, by hand."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.objectives.moco import Mixing, info_nce_logits, info_nce_loss, mixed_negatives, negative_top_share
from pipeline.models.queue import NNQueue


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


def test_negative_top_share__small_logits_by_hand():
    # one query, 4 negatives with softmax weights proportional to e^2, e^1, e^0, e^0: top 1% of 4 rounds up to 1
    logits = torch.tensor([[2.0, 1.0, 0.0, 0.0]])
    total = math.exp(2) + math.exp(1) + 2
    assert negative_top_share(logits, 0.01).item() == pytest.approx(math.exp(2) / total, rel=1e-6)
    # 50% of 4 = 2 negatives
    assert negative_top_share(logits, 0.5).item() == pytest.approx((math.exp(2) + math.exp(1)) / total, rel=1e-6)
    # equal logits: the top k of K hold k / K; rows are averaged
    two_rows = torch.tensor([[0.0] * 100, [5.0] + [0.0] * 99])
    top5 = (math.exp(5) + 4) / (math.exp(5) + 99)
    assert negative_top_share(two_rows, 0.05).item() == pytest.approx((0.05 + top5) / 2, rel=1e-6)


def test_negative_top_share__excluded_entries_are_no_negatives():
    # two valid negatives of equal logit and two excluded (-inf): the top 50% of 2 is 1 of them, half the mass
    logits = torch.tensor([[1.0, float("-inf"), 1.0, float("-inf")]])
    assert negative_top_share(logits, 0.5).item() == pytest.approx(0.5)
    assert negative_top_share(torch.full((1, 3), float("-inf")), 0.5).item() == 0.0


def test_info_nce_logits__excluded_queue_entries_leave_the_softmax():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # entry 0 equals the query: a false negative
    exclude = torch.tensor([[True, False]])
    logits = info_nce_logits(q, k, queue, 1.0, exclude=exclude)
    assert logits[0, 1] == float("-inf")
    # -log(e^1 / (e^1 + e^0)): the excluded entry no longer competes with the positive
    assert info_nce_loss(q, k, queue, 1.0, exclude=exclude).item() == pytest.approx(math.log(1 + math.exp(-1)))
    with pytest.raises(ValueError, match="exclude must be"):
        info_nce_logits(q, k, queue, 1.0, exclude=torch.tensor([[True]]))


def test_mixed_negatives__excluded_entries_are_never_mixed():
    query, queue = _orthonormal_setup()  # hardest: e1, e2, e3
    exclude = torch.zeros(1, 6, dtype=torch.bool)
    exclude[0, 0] = True  # e1, the hardest, is of the query's class
    mixed = mixed_negatives(query, queue, Mixing(hardest=2, mixes=40, query_mixes=0),
                            torch.Generator().manual_seed(0), exclude)[0]
    assert mixed[:, 1].abs().max() < 1e-7, "the excluded entry e1 is never mixed"
    assert mixed[:, [2, 3]].abs().sum() > 0 and mixed[:, [4, 5, 6]].abs().max() < 1e-7, "the next two hardest are"
    # only one entry left: every mix is that entry
    only = torch.ones(1, 6, dtype=torch.bool)
    only[0, 5] = False
    mixed = mixed_negatives(query, queue, Mixing(hardest=3, mixes=5, query_mixes=0), torch.Generator().manual_seed(0),
                            only)[0]
    torch.testing.assert_close(mixed, torch.eye(7)[6].expand(5, 7))


def test_queue_same_class__oracle_mask_on_a_tiny_labelled_queue():
    queue = NNQueue(size=4, dim=2)
    queue.push(torch.randn(3, 2), torch.tensor([10, 11, 12]), torch.tensor([0, 1, 0]))  # slot 3 never filled
    mask = queue.same_class(torch.tensor([0, 1, 2]))
    assert mask.tolist() == [[True, False, True, False],   # class 0: slots 0 and 2
                             [False, True, False, False],  # class 1: slot 1
                             [False, False, False, False]]  # class 2: none (the empty slot's -1 matches no class)


def test_info_nce_logits__a_query_with_every_entry_excluded_drops_its_mixes():
    q, k = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    queue = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    extra = F.normalize(torch.ones(2, 1, 2), dim=2)
    exclude = torch.tensor([[True, True], [False, True]])
    logits = info_nce_logits(q, k, queue, 1.0, extra, exclude)
    assert torch.isinf(logits[0, 1:]).all(), "query 0 keeps only its positive"
    # query 1 keeps entry 0 (q . n = 0) and its mix (q . (1, 1)/sqrt 2), loses entry 1
    assert logits[1, 1] == 0 and logits[1, 2] == float("-inf") and logits[1, 3] == pytest.approx(2 ** -0.5)
