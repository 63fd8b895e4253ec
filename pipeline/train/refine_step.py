"""Contrastive refinement (MIM-Refiner): ID heads on the last kept blocks, trained with NNA or an ablation.

Objectives (refine.variants.<name>.objective; docs/methods.md):
- nna: the positive is the anchor's nearest neighbour in the queue, the negatives the anchor itself (MIM-Refiner);
- nnclr: positive and negatives both use the nearest neighbour;
- moco: the anchor is the key of a momentum encoder + projector, the negatives a queue of earlier keys;
- mochi: moco plus synthetic hard negatives mixed from the queue entries nearest each query;
- cc: Contrastive Clustering: NT-Xent over the projections of the 2N views, plus a cluster head per block whose
  softmax assignments are contrasted column-wise, with an entropy term on their marginal (no predictor; the queue
  only feeds the nn_accuracy / nn_similarity diagnostics).
Every objective uses the same heads, views, queue size and temperature, so their runs differ in the loss only.
"""
from __future__ import annotations

import math
from itertools import groupby
from typing import Callable

import torch
import torch.nn as nn

from pipeline import distributed
from pipeline.data.augment import BYOL_VIEWS, photometric as photometric_ops, random_resized_crop
from pipeline.data.loader import DeviceImages
from pipeline.models.heads import ClusterHead, IDHead
from pipeline.models.vit import ViTEncoder
from pipeline.objectives.cc import cluster_loss, marginal_entropy_gap, nt_xent_logits, nt_xent_loss
from pipeline.objectives.moco import TOP_SHARE_FRACTIONS, Mixing, info_nce_logits, info_nce_loss, negative_top_share
from pipeline.objectives.nna import nna_logits, nna_loss, nnclr_loss, positive_mass
from pipeline.train.checkpoint import load_module_state
from pipeline.train.queue import EMA, NNQueue

OBJECTIVES = ("nna", "nnclr", "moco", "mochi", "cc")
MOMENTUM_OBJECTIVES = ("moco", "mochi")


def head_blocks(heads: str | int, probed_block: int, depth: int) -> list[int]:
    """The 0-based blocks that get an ID head (refine.heads), on an encoder of `depth` blocks.

    probe: from the probe's chosen block to the last block (MIM-Refiner attaches heads from where per-block
    quality peaks to the end; ml-jku/MIM-Refiner src/yamls/stage3); last_third: the last round(depth / 3) blocks (at
    least one), the official configs' placement; an int n: the last n blocks.

    Raises:
        ValueError: n is outside 1..depth.
    """
    if heads == "probe":
        return list(range(min(probed_block, depth - 1), depth))
    count = max(1, round(depth / 3)) if heads == "last_third" else heads
    if not isinstance(count, int) or not 1 <= count <= depth:
        raise ValueError(f"{heads!r} heads do not fit an encoder of {depth} blocks (1..{depth}, probe or last_third)")
    return list(range(depth - count, depth))


def head_features(encoder: ViTEncoder, images: torch.Tensor, blocks: list[int]) -> list[torch.Tensor]:
    """[N, C, H, W] -> one [N, D] CLS feature per block of `blocks`: raw block outputs (MIM-Refiner's "clsK"
    heads), except the encoder's last block, read through the final norm ("main"). A cut encoder has no final
    norm (`ViTEncoder.truncate`), so its last kept block is read raw like the others."""
    _, kept = encoder.run_blocks(encoder.prepend_cls(encoder.embed_patches(images)), blocks)
    feats = [t[:, 0] for t in kept]
    if blocks[-1] == encoder.depth - 1:
        feats[-1] = encoder.norm(kept[-1])[:, 0]
    return feats


class Refiner(nn.Module):
    """A (truncated) encoder with one ID head and one queue per head block.

    Args:
        encoder: the encoder, already cut to the refinement depth.
        blocks: 0-based blocks with a head.
        hidden, out, pred_hidden: head widths.
        queue_size, topk: queue length and the neighbour draw (1 = nearest).
        clusters: M > 0 adds a cluster head of M clusters per head block and drops the predictors (objective cc,
            whose instance head is the projector); 0 = none.
    """

    def __init__(self, encoder: ViTEncoder, blocks: list[int], hidden: int, out: int, pred_hidden: int,
                 queue_size: int, topk: int, clusters: int = 0):
        super().__init__()
        self.encoder, self.blocks = encoder, list(blocks)
        pred_hidden = 0 if clusters else pred_hidden
        self.heads = nn.ModuleList(IDHead(encoder.embed_dim, hidden, out, pred_hidden) for _ in self.blocks)
        self.queues = nn.ModuleList(NNQueue(queue_size, out, topk) for _ in self.blocks)
        self.cluster_heads = nn.ModuleList(ClusterHead(encoder.embed_dim, clusters) for _ in self.blocks
                                           if clusters)

    def pooled(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[N, C, H, W] -> one [N, D] CLS feature per head block."""
        return head_features(self.encoder, images, self.blocks)

    def projectors(self) -> nn.ModuleList:
        return nn.ModuleList(h.projector for h in self.heads)


def saved_cluster_head(refiner_state: dict[str, torch.Tensor], source: str) -> ClusterHead | None:
    """The cluster head of the last head block (it reads the encoder's CLS output, the feature evaluation takes)
    from a refined model.pt's "refiner" state, or None when the refinement trained none (objectives but cc).

    Raises:
        CheckpointError: the saved weights do not form a cluster head (naming `source`).
    """
    heads = sorted({int(k.split(".")[1]) for k in refiner_state if k.startswith("cluster_heads.")})
    if not heads:
        return None
    prefix = f"cluster_heads.{heads[-1]}."
    state = {k.removeprefix(prefix): v for k, v in refiner_state.items() if k.startswith(prefix)}
    clusters, dim = state.get("mlp.2.weight", torch.empty(0, 0)).shape
    head = ClusterHead(dim, clusters)
    load_module_state(head, state, f"{source}:refiner cluster head")
    return head.eval()


class MomentumKeys(nn.Module):
    """MoCo's key network: a moving average of the refiner's encoder and projectors (no predictor).

    Args:
        refiner: the online network; its current weights start the average.
        momentum: m in key = m * key + (1 - m) * online, applied after every optimizer step.
    """

    def __init__(self, refiner: Refiner, momentum: float):
        super().__init__()
        self.blocks = list(refiner.blocks)
        self.encoder = EMA(refiner.encoder, momentum)
        self.projectors = EMA(refiner.projectors(), momentum)

    @torch.no_grad()
    def update(self, refiner: Refiner) -> None:
        self.encoder.update(refiner.encoder)
        self.projectors.update(refiner.projectors())

    @torch.no_grad()
    def keys(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[N, C, H, W] -> one [N, out] key per head block (projector BatchNorm on batch statistics, as MoCo)."""
        self.projectors.module.train()
        feats = head_features(self.encoder.module, images, self.blocks)
        return [proj(f) for proj, f in zip(self.projectors.module, feats)]


Views = tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]  # (views [B, C, H, W] each, labels [B], indices [B])


def device_views(data: DeviceImages, global_scale_min: float, local_crops: int, local_scale: tuple[float, float],
                 local_size: int | None = None, photometric: bool = True) -> Callable[[torch.Tensor], Views]:
    """fetch(indices) -> views of arrays on the device: two global RandomResizedCrops (scale (min, 1)) at the
    input size and `local_crops` small ones (`local_scale`) at `local_size` pixels (None = the input size).

    With `photometric`, each view then gets its BYOL photometric operations (`augment.BYOL_VIEWS`: global view 0
    always blurred, view 1 blurred with p=0.1 and solarized with p=0.2, local crops blurred with p=0.5; all with
    colour jitter and grayscale), as the stream's views. They are drawn from the global generator after all the
    crops, so a seed gives the same crops with or without them."""
    recipes = [BYOL_VIEWS["global0"], BYOL_VIEWS["global1"]] + [BYOL_VIEWS["local"]] * local_crops

    def fetch(idx: torch.Tensor) -> Views:
        # views are the step's inputs: made in fp32 under any autocast (bf16 broke the blend of a blurred view)
        with torch.no_grad(), torch.autocast(data.labels.device.type, enabled=False):
            x = data.batch(idx)
            views = [random_resized_crop(x, (global_scale_min, 1.0)) for _ in range(2)]
            views += [random_resized_crop(x, local_scale, size=local_size) for _ in range(local_crops)]
            if photometric:
                views = [photometric_ops(v, data.pixel_mean, data.pixel_std, r.jitter_p, r.blur_p, r.solarize_p,
                                         r.gray_p) for v, r in zip(views, recipes)]
        return views, data.labels[idx], idx

    return fetch


def pooled_views(refiner: Refiner, views: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per head block, the [V * B, D] CLS features of all views in order; views of one size share a forward."""
    groups = [list(g) for _, g in groupby(views, key=lambda t: t.shape[-2:])]
    per_group = [refiner.pooled(torch.cat(g)) for g in groups]
    return [torch.cat(parts) for parts in zip(*per_group)]


def loader_views(batch: Views) -> Views:
    """fetch((views, labels, indices)) -> the same: the stream's workers drew MIM-Refiner's views."""
    return batch


def cc_terms(z: torch.Tensor, y: torch.Tensor, pairs: list[tuple[int, int]], temperature: float,
             cluster_temperature: float) -> tuple[list[torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """Contrastive Clustering's loss terms of one head, per view pair (a, c).

    Args:
        z: [V, B, out] projections (the instance head) of this rank's views.
        y: [V, B, M] cluster probabilities of the same views.
    Returns:
        (terms, pos_mass, {"cluster_entropy"}): per pair, the instance NT-Xent of this rank's rows against the
        global batch plus the cluster loss of the global batch (the same on every rank: its column contrast and
        marginal need every sample; DDP's mean of the ranks' gradients is then the global loss's); the positive's
        softmax mass for views (0, 1); H(P) / log M of view 0's marginal (1 = balanced, 0 = one cluster).
    """
    b = z.shape[1]
    offset = distributed.world().rank * b
    zs = [distributed.gather(t, grad=True) for t in z]
    ys = [distributed.gather(t, grad=True) for t in y]
    terms = [nt_xent_loss(zs[a], zs[c], temperature, offset, b) + cluster_loss(ys[a], ys[c], cluster_temperature)
             for a, c in pairs]
    with torch.no_grad():
        logits, positive = nt_xent_logits(zs[0], zs[1], temperature)
        rows = torch.arange(offset, offset + b, device=logits.device)
        align = torch.softmax(logits[rows], 1).gather(1, positive[rows, None]).mean()
        balance = 1 - marginal_entropy_gap(ys[0]) / math.log(ys[0].shape[1])
    return terms, align, {"cluster_entropy": balance}


def refine_step_fn(refiner: Refiner, data: DeviceImages | Callable[[object], Views], objective: str,
                   temperature: float, global_scale_min: float, local_crops: int, local_scale: tuple[float, float],
                   keys: MomentumKeys | None = None, mixing: Mixing | None = None, local_size: int | None = None,
                   photometric: bool = True, cluster_temperature: float | None = None, oracle: bool = False,
                   ) -> Callable[[object], tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """step_fn(batch) -> (sum over heads of the mean loss term, metrics of the last head).

    `data` is the train split on the device (a batch is indices; views drawn by `device_views`) or a fetch
    callable such as `loader_views` for the stream (a batch is views, labels, indices; then the crop arguments
    are the stream's business and unused here).

    Terms per head: each global view's anchor against the other global view's prediction (symmetric), plus each
    global anchor against each local view's prediction. The anchor is the stop-grad projection of the online
    network (nna, nnclr) or the momentum key (moco, mochi); the queue holds the anchors of global view 0 (of both
    global views for moco/mochi), is queried before the push and never returns a sample's own entry or a slot
    that was never filled. Local crops come at `local_size` pixels, with their own token grid (one encoder pass
    per view size).

    cc (`cc_terms`) contrasts the projections of view pairs (0, 1) and (global, local) symmetrically, with the
    refiner's cluster heads and `cluster_temperature`; its queue holds view 0's projections for the diagnostics.

    Metrics: pos_mass (the positive's softmax mass in the first term), nn_accuracy and nn_similarity (label
    agreement and cosine of the anchor's nearest queue entry); cc adds cluster_entropy. MoCHi's hardness analysis
    (`moco.negative_top_share`) adds neg_top1_share / neg_top5_share, the share of the negatives' softmax mass in
    the first term held by the hardest 1% / 5%: of the queue for moco/mochi (without the synthetic negatives, so
    both are measured on one set), of the batch for nna/nnclr.

    `oracle` (moco/mochi only; refine.false_negatives: oracle) removes the queue entries of each query's class
    from its negatives and its hardest set (MoCHi's class oracle); the metrics then measure what is left.

    Under torchrun (as in the official code) the predictions are gathered with their gradients, so NNA/NNCLR
    negatives span the global batch, and every rank pushes the gathered anchors, so all queues stay identical.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r} (one of {', '.join(OBJECTIVES)})")
    if (objective in MOMENTUM_OBJECTIVES) != (keys is not None) or (objective == "mochi") != (mixing is not None):
        raise ValueError(f"objective {objective!r}: momentum keys are for moco/mochi, mixing for mochi only")
    if (objective == "cc") != bool(refiner.cluster_heads) or (objective == "cc") != (cluster_temperature is not None):
        raise ValueError(f"objective {objective!r}: cluster heads and cluster_temperature are for cc only")
    if oracle and objective not in MOMENTUM_OBJECTIVES:
        raise ValueError(f"objective {objective!r}: the false-negative oracle masks queue negatives (moco/mochi)")

    fetch = device_views(data, global_scale_min, local_crops, local_scale, local_size, photometric) \
        if isinstance(data, DeviceImages) else data

    def step(batch: object) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        views, labels, idx = fetch(batch)
        b, v = views[0].shape[0], len(views)
        key_sets = keys.keys(torch.cat(views[:2])) if keys else None
        pairs = [(0, 1), (1, 0)] + [(a, c) for a in (0, 1) for c in range(2, v)]
        offset = distributed.world().rank * b
        total = torch.zeros((), device=views[0].device)
        metrics: dict[str, torch.Tensor] = {}
        for h, (feats, head, queue) in enumerate(zip(pooled_views(refiner, views), refiner.heads, refiner.queues)):
            z, p = head(feats)  # BatchNorm sees all views together, as in the official code
            z, p = z.view(v, b, -1), p.view(v, b, -1)
            y = refiner.cluster_heads[h](feats).view(v, b, -1) if objective == "cc" else None
            # the queue and the losses in fp32 under any autocast: softmax over a bf16 similarity matrix loses the
            # small differences between neighbours, and the logits' index_put needs one dtype
            with torch.autocast(z.device.type, enabled=False):
                z, p = z.float(), p.float()
                anchors = (key_sets[h].view(2, b, -1) if key_sets else z[:2].detach()).float()
                nn0, nn_label, nn_sim = queue.query(anchors[0], idx)
                hardness = None  # [B, K] logits of the first term's negatives (-inf: not a negative)
                if objective in MOMENTUM_OBJECTIVES:
                    exclude = queue.same_class(labels) if oracle else None
                    terms = [info_nce_loss(p[c], anchors[a], queue.x, temperature, mixing, exclude=exclude)
                             for a, c in pairs]
                    with torch.no_grad():
                        logits = info_nce_logits(p[1], anchors[0], queue.x, temperature, exclude=exclude)
                        align = torch.softmax(logits, 1)[:, 0].mean()
                        hardness = logits[:, 1:]
                elif objective == "cc":
                    terms, align, extra = cc_terms(z, y, [(0, 1)] + pairs[2:], temperature, cluster_temperature)
                else:
                    nns = (nn0, queue.query(anchors[1], idx)[0])
                    loss = nna_loss if objective == "nna" else nnclr_loss
                    preds = [distributed.gather(p[c], grad=True) for c in range(v)]  # global-batch negatives
                    terms = [loss(anchors[a], nns[a], preds[c], temperature, offset) for a, c in pairs]
                    align = positive_mass(anchors[0] if objective == "nna" else nn0, nn0, preds[1], temperature,
                                          offset)
                    with torch.no_grad():
                        hardness = nna_logits(anchors[0] if objective == "nna" else nn0, nn0, preds[1], temperature,
                                              offset)
                        rows = torch.arange(b, device=hardness.device)
                        hardness = hardness.index_put((rows, rows + offset), torch.tensor(float("-inf"),
                                                                                         device=hardness.device))
                total = total + torch.stack(terms).mean()
                # MoCo enqueues the keys of both global views (symmetrized MoCo: each is a negative for later
                # queries); NNA/NNCLR enqueue one view's anchors, as MIM-Refiner's queue does
                for view in (0, 1) if key_sets else (0,):
                    queue.push(*(distributed.gather(t) for t in (anchors[view], idx, labels)))
                metrics = {"pos_mass": align, "nn_accuracy": (nn_label == labels).float().mean(),
                           "nn_similarity": nn_sim.mean(), **(extra if objective == "cc" else {})}
                if hardness is not None:
                    metrics |= {k: negative_top_share(hardness, f) for k, f in TOP_SHARE_FRACTIONS.items()}
        return total, metrics

    return step
