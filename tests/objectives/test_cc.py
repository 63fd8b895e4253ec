"""Contrastive Clustering's instance and cluster losses by hand, and the cc refinement step they drive."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.data.loader import DeviceImages
from pipeline.config import load_params, validate
from pipeline.errors import CheckpointError, ConfigError
from pipeline.eval.clustering import cluster_head_scores
from pipeline.models.vit import ViTEncoder
from pipeline.objectives.cc import cluster_loss, marginal_entropy_gap, nt_xent_logits, nt_xent_loss
from pipeline.data.views import device_views
from pipeline.models.refined import saved_cluster_head
from pipeline.models.refiner import Loss, Refiner, refine_step_fn
from tests.conftest import REPO


def _nt_xent_by_loop(a: torch.Tensor, b: torch.Tensor, t: float) -> float:
    """The reference: every row of [a; b] against the 2N - 1 others, positive the same sample's other view."""
    x = [F.normalize(r, dim=0) for r in torch.cat([a, b])]
    n, losses = a.shape[0], []
    for i, xi in enumerate(x):
        pos = (i + n) % (2 * n)
        sims = {j: float(xi @ xj) / t for j, xj in enumerate(x) if j != i}
        losses.append(-sims[pos] + math.log(sum(math.exp(s) for s in sims.values())))
    return sum(losses) / len(losses)


def test_marginal_entropy_gap__uniform_assignment_gives_zero_so_the_entropy_is_log_k():
    for k in (2, 3, 10):
        soft = torch.full((5, k), 1.0 / k)
        balanced = torch.eye(k)  # every cluster holds one sample
        for y in (soft, balanced):
            gap = marginal_entropy_gap(y).item()
            assert gap == pytest.approx(0.0, abs=1e-6)
            assert math.log(k) - gap == pytest.approx(math.log(k), rel=1e-6)  # H(P) = log K


def test_marginal_entropy_gap__one_cluster_assignment_is_penalised_by_log_k():
    y = torch.zeros(6, 4)
    y[:, 2] = 1.0
    assert marginal_entropy_gap(y).item() == pytest.approx(math.log(4), rel=1e-6)
    # halfway: P = (3/4, 1/4, 0, 0) -> log 4 + 3/4 log 3/4 + 1/4 log 1/4
    y = torch.tensor([[1.0, 0, 0, 0]] * 3 + [[0, 1.0, 0, 0]])
    expected = math.log(4) + 0.75 * math.log(0.75) + 0.25 * math.log(0.25)
    assert marginal_entropy_gap(y).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_loss__two_samples_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.6, 0.8], [0.0, 2.0]])  # b_1 is e2 once normalized
    t = 0.5
    e = lambda s: math.exp(s / t)  # noqa: E731
    rows = [-0.6 / t + math.log(e(0) + e(0.6) + e(0)),    # a_0 = e1: a_1 0, b_0 0.6 (positive), b_1 0
            -1.0 / t + math.log(e(0) + e(0.8) + e(1.0)),  # a_1 = e2: a_0 0, b_0 0.8, b_1 1 (positive)
            -0.6 / t + math.log(e(0.6) + e(0.8) + e(0.8)),  # b_0: a_0 0.6 (positive), a_1 0.8, b_1 0.8
            -1.0 / t + math.log(e(0) + e(1.0) + e(0.8))]  # b_1 = e2: a_0 0, a_1 1 (positive), b_0 0.8
    assert nt_xent_loss(a, b, t).item() == pytest.approx(sum(rows) / 4, rel=1e-6)
    # one rank's share of a gathered batch: rows 1 of each view, negatives still over all four
    assert nt_xent_loss(a, b, t, offset=1, count=1).item() == pytest.approx((rows[1] + rows[3]) / 2, rel=1e-6)


def test_nt_xent_loss__collinear_views_give_log_2n_minus_1():
    a = torch.ones(5, 3)
    assert nt_xent_loss(a, 2 * a, 0.3).item() == pytest.approx(math.log(9), rel=1e-6)


def test_nt_xent_loss__matches_the_loop_reference_and_is_view_symmetric():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    assert nt_xent_loss(a, b, 0.2).item() == pytest.approx(_nt_xent_by_loop(a, b, 0.2), rel=1e-5)
    assert nt_xent_loss(b, a, 0.2).item() == pytest.approx(nt_xent_loss(a, b, 0.2).item(), rel=1e-6)
    perm = torch.randperm(4, generator=g)
    assert nt_xent_loss(a[perm], b[perm], 0.2).item() == pytest.approx(nt_xent_loss(a, b, 0.2).item(), rel=1e-6)


def test_nt_xent_logits__a_row_is_never_its_own_negative():
    logits, positive = nt_xent_logits(torch.eye(3), torch.eye(3), 1.0)
    assert torch.isinf(logits.diagonal()).all() and positive.tolist() == [3, 4, 5, 0, 1, 2]


def test_cluster_loss__balanced_identical_views_by_hand():
    # two samples, two clusters, each sample surely in its own cluster: columns e1, e2 in both views, marginal
    # uniform (gaps 0); each column row: positive 1, negatives 0 and 0 -> log(2 + e) - 1 at tau_C = 1
    y = torch.eye(2)
    assert cluster_loss(y, y, 1.0).item() == pytest.approx(math.log(2 + math.e) - 1, rel=1e-6)


def test_cluster_loss__one_cluster_costs_more_than_a_balanced_split():
    one = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # columns (1, 1) and (0, 0): the filled column sees its positive 1 and negatives 0, the empty one all zeros
    # (log 3); both views add log 2 for the one-cluster marginal
    expected = (2 * (math.log(2 + math.e) - 1) + 2 * math.log(3)) / 4 + 2 * math.log(2)
    assert cluster_loss(one, one, 1.0).item() == pytest.approx(expected, rel=1e-6)
    assert cluster_loss(one, one, 1.0) > cluster_loss(torch.eye(2), torch.eye(2), 1.0)


def test_cluster_loss__gradients_reach_both_views_and_sample_order_does_not_matter():
    g = torch.Generator().manual_seed(1)
    la, lb = torch.randn(6, 3, generator=g, requires_grad=True), torch.randn(6, 3, generator=g, requires_grad=True)
    ya, yb = la.softmax(1), lb.softmax(1)
    loss = cluster_loss(ya, yb, 1.0)
    loss.backward()
    assert la.grad.abs().sum() > 0 and lb.grad.abs().sum() > 0
    perm = torch.randperm(6, generator=g)
    assert cluster_loss(ya[perm], yb[perm], 1.0).item() == pytest.approx(loss.item(), rel=1e-6)


def test_cc_losses__bad_shapes_and_temperatures_raise():
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(torch.eye(2), torch.eye(2), 0.0)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        nt_xent_loss(torch.eye(2), torch.eye(3), 1.0)
    with pytest.raises(ValueError, match="outside"):
        nt_xent_loss(torch.eye(2), torch.eye(2), 1.0, offset=1, count=2)
    with pytest.raises(ValueError, match="M >= 2"):
        marginal_entropy_gap(torch.ones(4, 1))


def _refiner(clusters: int) -> tuple[DeviceImages, Refiner]:
    g = torch.Generator().manual_seed(0)
    data = DeviceImages((torch.rand(32, 8, 8, 1, generator=g) * 255).to(torch.uint8).numpy(),
                        torch.randint(0, 3, (32,), generator=g).numpy(), [0.5], [0.25], torch.device("cpu"))
    torch.manual_seed(0)
    return data, Refiner(ViTEncoder(8, 2, 1, 16, 2, 2), [0, 1], 16, 8, 16, queue_size=24, topk=1, clusters=clusters)


def test_refine_step__cc_trains_encoder_projectors_and_cluster_heads_without_predictors():
    data, refiner = _refiner(clusters=3)
    assert all(isinstance(h.predictor, torch.nn.Identity) for h in refiner.heads)
    step = refine_step_fn(refiner, device_views(data, 0.25, 1, (0.1, 0.3)), Loss("cc", 0.5, cluster_temperature=1.0))
    loss, metrics = step(torch.arange(16))
    loss.backward()
    assert torch.isfinite(loss) and set(metrics) == {"pos_mass", "nn_accuracy", "nn_similarity", "cluster_entropy"}
    assert 0 < metrics["cluster_entropy"] <= 1
    for name, param in refiner.named_parameters():  # DDP needs a gradient for every parameter
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert set(refiner.queues[0].idx[:16].tolist()) == set(range(16)), "the queue still feeds the diagnostics"


def test_refine_step__cc_needs_cluster_heads_and_its_temperature():
    data, refiner = _refiner(clusters=0)
    with pytest.raises(ValueError, match="cluster heads"):
        refine_step_fn(refiner, device_views(data, 0.25, 0, (0.1, 0.3)), Loss("cc", 0.5, cluster_temperature=1.0))
    data, refiner = _refiner(clusters=3)
    with pytest.raises(ValueError, match="cluster heads"):
        refine_step_fn(refiner, device_views(data, 0.25, 0, (0.1, 0.3)), Loss("nna", 0.5))


def test_saved_cluster_head__rebuilds_the_last_blocks_head_from_the_refiner_state():
    _, refiner = _refiner(clusters=3)
    state = refiner.state_dict()
    head = saved_cluster_head(state, "model.pt")
    x = torch.randn(5, 16)
    torch.testing.assert_close(head(x), refiner.cluster_heads[1](x))
    assert saved_cluster_head(_refiner(clusters=0)[1].state_dict(), "model.pt") is None
    state["cluster_heads.1.mlp.0.weight"] = torch.zeros(16, 15)
    with pytest.raises(CheckpointError, match="model.pt:refiner cluster head"):
        saved_cluster_head(state, "model.pt")


def test_params__cluster_k_and_a_variants_moco_momentum_are_checked():
    params = load_params(REPO / "params.yaml")
    assert params["refine"]["cluster_k"] is None  # the default: as many clusters as the dataset has classes
    params["refine"]["variants"]["mae_moco_m0"] = {"pretrained": "mae", "objective": "moco", "moco_momentum": 0.0}
    validate(params)
    params["refine"]["variants"]["mae_cc"] = {"pretrained": "mae", "objective": "cc", "moco_momentum": 0.0}
    with pytest.raises(ConfigError, match="refine.variants.mae_cc.moco_momentum is for objectives moco and mochi"):
        validate(params)
    del params["refine"]["variants"]["mae_cc"]["moco_momentum"]
    params["refine"]["cluster_k"] = 1
    with pytest.raises(ConfigError, match="refine.cluster_k = 1"):
        validate(params)


def test_cluster_head_scores__argmax_assignments_matched_to_classes():
    # clusters 2, 0, 1 hold classes 0, 1, 2: a relabelling, so ACC, NMI and ARI are 1; one sample is off
    probs = torch.tensor([[0.1, 0.2, 0.7], [0.2, 0.1, 0.7], [0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1],
                          [0.1, 0.6, 0.3]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    scores = cluster_head_scores(lambda f: f, probs, labels)
    assert scores["acc"] == 1.0 and scores["nmi"] == pytest.approx(1.0) and scores["ari"] == pytest.approx(1.0)
    assert scores["used"] == 3
    one = cluster_head_scores(lambda f: f, probs, torch.tensor([0, 0, 1, 1, 2, 0]))
    assert one["acc"] == pytest.approx(5 / 6)
    collapsed = cluster_head_scores(lambda f: torch.tensor([[1.0, 0.0, 0.0]] * 6), probs, labels)
    assert collapsed["used"] == 1 and collapsed["acc"] == pytest.approx(2 / 6) and collapsed["nmi"] == 0.0
