"""MIM-Refiner's refinement (pipeline/models/refiner.py): the NN queue, the EMA, the objectives' step and the two
phases (frozen encoder; resume of queue and EMA)."""
from __future__ import annotations

import copy

import pytest
import torch

from pipeline.data.loader import DeviceImages, epoch_order
from pipeline.models.vit import ViTEncoder
from pipeline.objectives.moco import Mixing
from pipeline.train.checkpoint import Checkpointer
from pipeline.models.classifier import layer_of
from pipeline.train.loop import fit
from pipeline.train.optim import layer_decay_groups
from pipeline.data.views import device_views
from pipeline.models.queue import EMA, NNQueue, ema_momentum, start_share
from pipeline.models.momentum import MomentumKeys, key_momentum
from pipeline.models.refiner import Loss, Phase, Refiner, head_blocks, head_features, phases, refine_step_fn


def test_queue__never_returns_own_entry_and_wraps():
    queue = NNQueue(size=4, dim=2)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    queue.push(z, torch.tensor([10, 11, 12]), torch.tensor([0, 1, 0]))
    # sample 10 is most similar to its own entry; it must get 12's entry (the next most similar) instead
    nn, label, sim = queue.query(torch.tensor([[1.0, 0.0]]), torch.tensor([10]))
    assert torch.equal(nn, z[2:3]) and label.tolist() == [0] and sim.item() < 1.0
    queue.push(torch.tensor([[5.0, 5.0], [6.0, 6.0]]), torch.tensor([13, 14]), torch.tensor([1, 1]))
    assert queue.idx.tolist() == [14, 11, 12, 13] and int(queue.ptr) == 1


def test_queue__query_before_push_returns_a_detached_copy():
    queue = NNQueue(size=3, dim=2)
    queue.push(torch.ones(3, 2), torch.arange(3), torch.zeros(3, dtype=torch.long))
    nn, _, _ = queue.query(torch.ones(1, 2, requires_grad=True), torch.tensor([7]))
    nn += 1
    assert torch.equal(queue.x, torch.ones(3, 2)) and not nn.requires_grad


def test_ema__update_is_exact():
    online = torch.nn.Linear(2, 2)
    ema = EMA(online, momentum=0.9)
    before = copy.deepcopy(ema.module.weight.detach())
    with torch.no_grad():
        online.weight.add_(1.0)
    ema.update(online)
    torch.testing.assert_close(ema.module.weight, 0.9 * before + 0.1 * online.weight.detach())


def test_head_blocks__probe_places_heads_from_the_chosen_block_to_the_last():
    """probe: chosen block .. last; last_third and a count: the last blocks; a count beyond the depth fails."""
    assert head_blocks("probe", 1, 6) == [1, 2, 3, 4, 5] and head_blocks("probe", 5, 6) == [5]
    assert head_blocks("probe", 4, 3) == [2]  # a cut encoder keeps at least its last block's head
    assert head_blocks("last_third", 0, 6) == [4, 5] and head_blocks("last_third", 0, 2) == [1]
    assert head_blocks(3, 0, 6) == [3, 4, 5]
    with pytest.raises(ValueError, match="7 heads"):
        head_blocks(7, 0, 6)


def test_queue__never_returns_a_slot_that_was_never_filled():
    """Unfilled slots (index -1) are never neighbours, even when their random vectors are the most similar."""
    queue = NNQueue(size=8, dim=2, topk=4)
    queue.x[:] = torch.tensor([1.0, 0.0])  # every unfilled slot is a perfect match of the query
    queue.push(torch.tensor([[0.0, 1.0], [0.2, 1.0]]), torch.tensor([5, 6]), torch.tensor([3, 4]))
    for _ in range(20):  # top-4 draws among 2 valid entries: only those two ever come back
        nn, label, _ = queue.query(torch.tensor([[1.0, 0.0]]), torch.tensor([9]))
        assert label.item() in (3, 4) and nn[0, 1].item() == 1.0


def test_queue__empty_queue_returns_the_query_itself():
    """Before the first push the positive is the query (label -1, similarity 1), never a random vector."""
    queue = NNQueue(size=4, dim=3)
    z = torch.randn(2, 3)
    nn, label, sim = queue.query(z, torch.tensor([0, 1]))
    assert torch.equal(nn, z) and label.tolist() == [-1, -1] and torch.equal(sim, torch.ones(2))


def test_ema__warmup_follows_the_online_weights_and_start_share_is_the_product():
    """With warmup the first update has momentum 1/10; start_share is m ** steps without warmup."""
    online = torch.nn.Linear(2, 2)
    ema = EMA(online, momentum=0.99, warmup=True)
    before = copy.deepcopy(ema.module.weight.detach())
    with torch.no_grad():
        online.weight.add_(1.0)
    ema.update(online)
    torch.testing.assert_close(ema.module.weight, 0.1 * before + 0.9 * online.weight.detach())
    assert int(ema.updates) == 1 and ema_momentum(0.99, 1000, True) == 0.99
    assert start_share(0.99, 78, False) == pytest.approx(0.99 ** 78)  # the 46% of the old default run
    assert start_share(0.99, 3, True) == pytest.approx(1 / 10 * 2 / 11 * 3 / 12) and start_share(0.99, 78, True) < 1e-6


def test_head_features__raw_blocks_and_the_final_norm_only_on_the_encoders_last_block():
    """Non-final heads read the raw block; the last block goes through the final norm; a cut encoder has none."""
    torch.manual_seed(0)
    encoder = ViTEncoder(8, 2, 1, 16, 3, 2)
    with torch.no_grad():
        encoder.norm.weight.mul_(3.0)  # a norm that is visibly not the identity
    x = torch.randn(4, 1, 8, 8)
    raw = [cls[:, 0] for _, cls in encoder.forward_intermediates(x, [1, 2], return_prefix_tokens=True,
                                                                    intermediates_only=True)]
    feats = head_features(encoder, x, [1, 2])
    torch.testing.assert_close(feats[0], raw[0])
    torch.testing.assert_close(feats[1], encoder.norm(raw[1]))
    encoder.truncate(2)  # block 1 is now the last: its head reads it raw, not through block 2's norm
    torch.testing.assert_close(head_features(encoder, x, [1])[0], raw[0])
    assert encoder.arch["final_norm"] is False and "norm.weight" not in encoder.state_dict()


def test_fit__epoch_offset_draws_new_batches_and_crops():
    """A second phase (epoch_offset) sees other batches and other random draws than the first phase's epoch 0."""
    seen = []

    def step(batch):
        seen.append((batch.tolist(), torch.rand(1).item()))
        return (model.weight ** 2).sum(), {}

    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    for offset in (0, 1, 0):
        fit(model, step, lambda e: epoch_order(32, 32, 0, e, torch.device("cpu")), opt, lambda s: 0.0, 1, 0,
            epoch_offset=offset)
    assert seen[0] != seen[1] and seen[0] == seen[2]


def _setup(seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(0)
    data = DeviceImages((torch.rand(64, 8, 8, 1, generator=g) * 255).to(torch.uint8).numpy(),
                        torch.randint(0, 3, (64,), generator=g).numpy(), [0.5], [0.25], torch.device("cpu"))
    encoder = ViTEncoder(8, 2, 1, 16, 2, 2)
    refiner = Refiner(encoder, [1], 16, 8, 16, queue_size=32, topk=2)
    return data, encoder, refiner, EMA(encoder, 0.9)


def _fit(data, encoder, refiner, ema, epochs, train_encoder, ckpt=None):
    encoder.requires_grad_(train_encoder)
    opt = torch.optim.AdamW(layer_decay_groups(refiner, 3, layer_of(2), 0.05, 0.65), lr=0.0)
    step = refine_step_fn(refiner, device_views(data, 0.25, 1, (0.05, 0.25)), Loss("nna", 0.2))
    return fit(refiner, step, lambda e: epoch_order(64, 16, 0, e, torch.device("cpu")), opt, lambda s: 1.0e-3,
               epochs, 0, checkpointer=ckpt, extra_state={"ema": ema},
               after_step=(lambda: ema.update(encoder)) if train_encoder else None)


def test_refine__frozen_phase_leaves_encoder_bit_identical():
    data, encoder, refiner, ema = _setup()
    before = copy.deepcopy(encoder.state_dict())
    heads_before = copy.deepcopy(refiner.heads.state_dict())
    result = _fit(data, encoder, refiner, ema, 2, train_encoder=False)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert any(not torch.equal(heads_before[k], v) for k, v in refiner.heads.state_dict().items())
    assert {"pos_mass", "nn_accuracy", "nn_similarity"} <= set(result.history[-1])


def test_refine__resumed_run_continues_queue_and_ema(tmp_path):
    ref = _setup()
    _fit(*ref, 3, train_encoder=True)
    run = _setup()
    ckpt = Checkpointer(tmp_path / "resume.pt", "nna")
    _fit(*run, 2, train_encoder=True, ckpt=ckpt)
    resumed = _setup()  # a fresh process: everything comes back from the checkpoint
    result = _fit(*resumed, 3, train_encoder=True, ckpt=ckpt)
    assert result.resumed_from_epoch == 2
    for a, b in ((ref[2], resumed[2]), (ref[3], resumed[3])):  # refiner (with queues), EMA
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), k


def test_momentum_keys__update_is_exact_for_encoder_and_projectors():
    _, _, refiner, _ = _setup()
    keys = MomentumKeys(refiner, momentum=0.9)
    before = {k: v.clone() for k, v in keys.state_dict().items() if not k.endswith("updates")}
    with torch.no_grad():
        for p in refiner.parameters():
            p.add_(torch.randn_like(p))
    keys.update(refiner)
    online = {**{f"encoder.module.{k}": v for k, v in refiner.encoder.state_dict().items()},
              **{f"projectors.module.{k}": v for k, v in refiner.projectors().state_dict().items()}}
    assert set(online) == set(before)
    for name, value in keys.state_dict().items():
        if value.dtype.is_floating_point and name in before:
            torch.testing.assert_close(value, 0.9 * before[name] + 0.1 * online[name], rtol=0, atol=1e-6)
    assert not any("predictor" in k for k in keys.state_dict()), "MoCo keys skip the predictor"


def test_key_momentum__moco_v3_cosine_by_hand():
    assert key_momentum(0.99, 5, 10, "constant") == 0.99
    assert key_momentum(0.99, 0, 10, "cosine") == pytest.approx(0.99)  # starts at the base
    assert key_momentum(0.99, 5, 10, "cosine") == pytest.approx(1 - 0.01 * 0.5)  # cos(pi/2) = 0: halfway to 1
    assert key_momentum(0.99, 10, 10, "cosine") == pytest.approx(1.0)  # ends at 1
    assert key_momentum(0.9, 2, 6, "cosine") == pytest.approx(1 - 0.1 * (1 + 0.5) / 2)  # cos(pi/3) = 0.5


def test_momentum_keys__cosine_schedule_sets_each_updates_momentum():
    _, _, refiner, _ = _setup()
    keys = MomentumKeys(refiner, 0.5, "cosine", total_updates=2)
    before = {k: v.clone() for k, v in keys.encoder.module.state_dict().items()}
    with torch.no_grad():
        for p in refiner.encoder.parameters():
            p.add_(1.0)
    keys.update(refiner)  # update 0: momentum 0.5
    keys.update(refiner)  # update 1: momentum 1 - 0.5 * (1 + cos(pi/2)) / 2 = 0.75
    online = refiner.encoder.state_dict()
    for k, v in keys.encoder.module.state_dict().items():
        if v.dtype.is_floating_point:
            once = 0.5 * before[k] + 0.5 * online[k]
            torch.testing.assert_close(v, 0.75 * once + 0.25 * online[k], rtol=0, atol=1e-6)


def test_momentum_keys__a_key_depends_on_its_own_image_only():
    """No batch statistics in the key projector (no BN leak): a sample's key is the same alone or in any batch."""
    _, _, refiner, _ = _setup()
    keys = MomentumKeys(refiner, 0.9)
    a = refiner.encoder.arch
    images = torch.randn(6, a["in_chans"], a["img_size"], a["img_size"])
    together = keys.keys(images)
    alone = keys.keys(images[2:3])
    shuffled = keys.keys(images[[5, 2, 0]])
    for t, one, s in zip(together, alone, shuffled):
        torch.testing.assert_close(t[2:3], one, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(t[2:3], s[1:2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("objective", ["nna", "nnclr", "moco", "mochi"])
def test_refine_step__every_objective_trains_and_fills_the_queue(objective):
    data, encoder, refiner, _ = _setup()
    keys = MomentumKeys(refiner, 0.9) if objective in ("moco", "mochi") else None
    mixing = Mixing(8, 4, 2) if objective == "mochi" else None
    step = refine_step_fn(refiner, device_views(data, 0.25, 0, (0.05, 0.25)), Loss(objective, 0.2, mixing), keys)
    opt = torch.optim.AdamW(refiner.parameters(), lr=1.0e-3)
    idx = torch.arange(16)
    torch.manual_seed(0)
    loss, metrics = step(idx)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and {"pos_mass", "nn_accuracy", "nn_similarity", "neg_top1_share",
                                     "neg_top5_share"} == set(metrics)
    assert 0 < metrics["neg_top1_share"] <= metrics["neg_top5_share"] <= 1
    assert refiner.encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    queue = refiner.queues[0]
    assert set(queue.idx[:16].tolist()) == set(range(16))
    if keys:  # the queue holds the momentum keys of both global views (symmetrized MoCo): replay the step's views
        torch.manual_seed(0)
        views, _, _ = device_views(data, 0.25, 0, (0.05, 0.25))(idx)
        assert queue.idx.tolist() == list(range(16)) * 2
        torch.testing.assert_close(queue.x, keys.keys(torch.cat(views[:2]))[0])


def test_refine_step__local_crops_at_their_own_size_share_the_heads_with_the_global_views():
    data, encoder, refiner, _ = _setup()  # 8 px images, 2 px patches
    step = refine_step_fn(refiner, device_views(data, 0.25, 2, (0.05, 0.25), 4), Loss("nna", 0.2))
    views = device_views(data, 0.25, 2, (0.05, 0.25), 4)(torch.arange(16))[0]
    assert [tuple(v.shape[-2:]) for v in views] == [(8, 8), (8, 8), (4, 4), (4, 4)]
    assert [f.shape for f in refiner.pooled_views(views)] == [(64, 16)]  # 4 views x 16 images, one head
    loss, _ = step(torch.arange(16))
    loss.backward()
    assert torch.isfinite(loss) and refiner.encoder.patch_embed.proj.weight.grad.abs().sum() > 0


def test_refine_step__objective_and_key_network_must_match():
    data, _, refiner, _ = _setup()
    with pytest.raises(ValueError, match="momentum keys"):
        refine_step_fn(refiner, device_views(data, 0.25, 0, (0.05, 0.25)), Loss("moco", 0.2))
    with pytest.raises(ValueError, match="unknown objective"):
        refine_step_fn(refiner, device_views(data, 0.25, 0, (0.05, 0.25)), Loss("simclr", 0.2))


def test_phases__own_topk_and_phase_two_continues_the_stream():
    """Phase 1 draws top-head_topk neighbours from epoch 0; phase 2 top-topk from epoch head_epochs on."""
    cfg = {"head_epochs": 2, "epochs": 3, "head_blr": 1.0, "blr": 2.0, "head_topk": 1, "topk": 20}
    assert phases(cfg) == (Phase("heads", 2, 1.0, 1, False, 0), Phase("full", 3, 2.0, 20, True, 2))


def test_refine_step__oracle_removes_every_same_class_queue_entry():
    """moco with refine.false_negatives: oracle on a one-class batch: once the first step has filled the queue (32
    slots, both views of 16 images), every entry is of the query's class, so only the positive is left in each
    softmax: the loss is 0 and the positive holds all the mass."""
    data, _, refiner, _ = _setup()
    idx = (data.labels == 0).nonzero().squeeze(1)[:16]
    assert len(idx) == 16
    step = refine_step_fn(refiner, device_views(data, 0.25, 0, (0.05, 0.25)), Loss("moco", 0.2, oracle=True),
                          MomentumKeys(refiner, 0.9))
    first, _ = step(idx)
    assert first > 0, "the queue's never-filled slots are negatives of every class"
    loss, metrics = step(idx)
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and metrics["pos_mass"].item() == pytest.approx(1.0)
    assert metrics["neg_top1_share"] == 0  # no negatives left
    with pytest.raises(ValueError, match="false-negative oracle"):
        refine_step_fn(refiner, device_views(data, 0.25, 0, (0.05, 0.25)), Loss("nna", 0.2, oracle=True))
