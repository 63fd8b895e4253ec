"""The NNA loss by hand: only the positive is swapped, gradients reach the predictions only."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.objectives.nna import nna_logits, nna_loss, nnclr_loss, positive_mass


def test_nna_loss__three_samples_by_hand():
    # unit vectors, so the logits are plain dot products / T
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    q = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0]])
    p = torch.tensor([[0.6, 0.8], [0.8, 0.6], [-0.6, -0.8]])
    t = 0.5
    # row 0: positive q0.p0 = 0.8; negatives z0.p1 = 0.8, z0.p2 = -0.6
    # row 1: positive q1.p1 = 0.8; negatives z1.p0 = 0.8, z1.p2 = -0.8
    # row 2: positive q2.p2 = 0.8; negatives z2.p0 = -0.6, z2.p1 = -0.8
    rows = [(0.8, [0.8, -0.6]), (0.8, [0.8, -0.8]), (0.8, [-0.6, -0.8])]
    expected = sum(-(pos / t) + math.log(sum(math.exp(s / t) for s in [pos, *neg])) for pos, neg in rows) / 3
    assert nna_loss(z, q, p, t).item() == pytest.approx(expected, rel=1e-6)


def test_nna_logits__only_the_positive_is_swapped():
    g = torch.Generator().manual_seed(0)
    z, q, p = (torch.randn(5, 4, generator=g) for _ in range(3))
    logits = nna_logits(z, q, p, 1.0)
    zn, qn, pn = (F.normalize(x, dim=1) for x in (z, q, p))
    torch.testing.assert_close(logits.diagonal(), (qn * pn).sum(1))
    off = ~torch.eye(5, dtype=torch.bool)
    torch.testing.assert_close(logits[off], (zn @ pn.T)[off])


def test_nna_loss__collinear_embeddings_give_log_batch():
    v = torch.ones(7, 3)
    assert nna_loss(v, v, v, 0.1).item() == pytest.approx(math.log(7), rel=1e-5)


def test_nna_loss__gradients_reach_predictions_only():
    z, q, p = (torch.randn(4, 3, requires_grad=True) for _ in range(3))
    nna_loss(z, q, p, 0.2).backward()
    assert z.grad is None and q.grad is None
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_nna_loss__batch_permutation_invariant_and_batch_one():
    g = torch.Generator().manual_seed(1)
    z, q, p = (torch.randn(6, 4, generator=g) for _ in range(3))
    perm = torch.randperm(6, generator=g)
    torch.testing.assert_close(nna_loss(z, q, p, 0.3), nna_loss(z[perm], q[perm], p[perm], 0.3))
    assert nna_loss(z[:1], q[:1], p[:1], 0.3).item() == pytest.approx(0.0, abs=1e-6)
    assert positive_mass(z[:1], q[:1], p[:1], 0.3).item() == pytest.approx(1.0)


def test_nna_loss__bad_inputs():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        nna_loss(torch.ones(2, 2), torch.ones(2, 2), torch.ones(2, 2), 0.0)
    with pytest.raises(ValueError, match=r"anchor and neighbor must be \[B, D\]"):
        nna_loss(torch.ones(2, 2), torch.ones(3, 2), torch.ones(2, 2), 0.1)
    with pytest.raises(ValueError, match=r"offset 3"):
        nna_loss(torch.ones(2, 2), torch.ones(2, 2), torch.ones(4, 2), 0.1, offset=3)


def test_nna_loss__ranks_with_gathered_predictions_add_up_to_the_whole_batch():
    # two ranks hold rows 0-2 and 3-5; each sees every prediction (the gathered batch) as negatives
    g = torch.Generator().manual_seed(3)
    z, q, p = (torch.randn(6, 4, generator=g) for _ in range(3))
    for loss in (nna_loss, nnclr_loss):
        per_rank = [loss(z[r * 3:(r + 1) * 3], q[r * 3:(r + 1) * 3], p, 0.2, offset=r * 3) for r in (0, 1)]
        assert (sum(per_rank) / 2).item() == pytest.approx(loss(z, q, p, 0.2).item(), rel=1e-6)


def test_nnclr_loss__swaps_the_negatives_where_nna_does_not():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    q = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0]])
    p = torch.tensor([[0.6, 0.8], [0.8, 0.6], [-0.6, -0.8]])
    t = 0.5
    # NNCLR: every logit of row i is q_i . p_j
    sims = (q @ p.T).tolist()
    expected = sum(-(sims[i][i] / t) + math.log(sum(math.exp(s / t) for s in sims[i])) for i in range(3)) / 3
    assert nnclr_loss(z, q, p, t).item() == pytest.approx(expected, rel=1e-6)
    assert nnclr_loss(z, q, p, t).item() != pytest.approx(nna_loss(z, q, p, t).item(), rel=1e-3)
    # the un-swapped anchor never enters NNCLR, while it sets every negative of NNA
    other = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    assert nnclr_loss(other, q, p, t).item() == pytest.approx(nnclr_loss(z, q, p, t).item(), rel=1e-6)
    assert nna_loss(other, q, p, t).item() != pytest.approx(nna_loss(z, q, p, t).item(), rel=1e-3)
