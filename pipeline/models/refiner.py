"""MIM-Refiner (Alkin et al., arXiv 2402.10093; ml-jku/MIM-Refiner) in one place: where the ID heads sit, the
refiner that carries them, the two phases of its recipe, the table of objectives and one training step.

- Heads: one ID head (projector + predictor, `heads.IDHead`) and one nearest-neighbour queue (`queue.NNQueue`) per
  block from the probe's peak block to the last (`head_blocks`), each reading that block's CLS token
  (`head_features`).
- Phases: the heads alone on the frozen encoder with the nearest neighbour as positive, then everything with
  layer-wise lr decay and the neighbour drawn from the top-k (the paper's stages 2 and 3; `phases`). The EMA of
  the encoder (`queue.EMA`) follows the second phase and is what evaluation reads.
- Objectives (`OBJECTIVES`, refine.variants.<name>.objective): nna, the paper's (the positive is the anchor's
  nearest queue neighbour, the negatives the anchor itself); nnclr (positive and negatives both swapped); moco
  and mochi (the anchor is a key of `momentum.MomentumKeys`, the negatives a queue of earlier keys, mochi mixing
  hard negatives); cc (Contrastive Clustering: NT-Xent between views plus a cluster head per block). Each loss is a
  pure function in pipeline/objectives/; every objective uses the same heads, views, queue size and temperature,
  so their runs differ in the loss only.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn as nn

from pipeline import distributed
from pipeline.data.views import Views
from pipeline.errors import ConfigError
from pipeline.models.heads import (CC_INSTANCE_DIM, CC_INSTANCE_TEMPERATURE, ClusterHead, IDHead,
                                   cc_instance_projector)
from pipeline.models.queue import NNQueue
from pipeline.models.vit import ViTEncoder

if TYPE_CHECKING:  # MoCo's key network (models/momentum.py) builds on the Refiner; the step only calls it
    from pipeline.models.momentum import MomentumKeys
from pipeline.objectives.cc import cc_terms
from pipeline.objectives.moco import TOP_SHARE_FRACTIONS, Mixing, info_nce_logits, info_nce_loss, negative_top_share
from pipeline.objectives.nna import nna_logits, nna_loss, nnclr_loss, positive_mass

# ---- where the heads sit ----------------------------------------------------------------------------------------

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


# ---- the refiner --------------------------------------------------------------------------------------------------

class Refiner(nn.Module):
    """A (truncated) encoder with one ID head and one queue per head block.

    Args:
        encoder: the encoder, already cut to the refinement depth.
        blocks: 0-based blocks with a head.
        hidden, out, pred_hidden: head widths.
        queue_size, topk: queue length and the neighbour draw (1 = nearest).
        clusters: M > 0 adds a cluster head of M clusters per head block and drops the predictors (objective cc,
            whose instance head is the projector); 0 = none.
        cc_head: "shared" (the instance head is the projector every objective has) or "official" (Contrastive
            Clustering's own: Linear-ReLU-Linear to CC_INSTANCE_DIM, no BatchNorm); cc only.
    """

    def __init__(self, encoder: ViTEncoder, blocks: list[int], hidden: int, out: int, pred_hidden: int,
                 queue_size: int, topk: int, clusters: int = 0, cc_head: str = "shared"):
        super().__init__()
        self.encoder, self.blocks = encoder, list(blocks)
        pred_hidden = 0 if clusters else pred_hidden
        official = cc_head == "official"
        if official and not clusters:
            raise ValueError("cc_head official is Contrastive Clustering's instance head: it needs cluster heads")
        out = CC_INSTANCE_DIM if official else out
        self.heads = nn.ModuleList(
            IDHead(encoder.embed_dim, hidden, out, pred_hidden,
                   cc_instance_projector(encoder.embed_dim) if official else None) for _ in self.blocks)
        self.queues = nn.ModuleList(NNQueue(queue_size, out, topk) for _ in self.blocks)
        self.cluster_heads = nn.ModuleList(ClusterHead(encoder.embed_dim, clusters) for _ in self.blocks
                                           if clusters)

    def pooled(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[N, C, H, W] -> one [N, D] CLS feature per head block."""
        return head_features(self.encoder, images, self.blocks)

    def pooled_views(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per head block, the [V * B, D] CLS features of all views in order; views of one size share a forward."""
        groups = [list(g) for _, g in groupby(views, key=lambda t: t.shape[-2:])]
        per_group = [self.pooled(torch.cat(g)) for g in groups]
        return [torch.cat(parts) for parts in zip(*per_group)]

    def projectors(self) -> nn.ModuleList:
        return nn.ModuleList(h.projector for h in self.heads)


# ---- the recipe: the loss and the two phases -----------------------------------------------------------------------

@dataclass(frozen=True)
class Loss:
    """What one step optimizes: the objective (a key of OBJECTIVES) and its settings."""

    objective: str
    temperature: float
    mixing: Mixing | None = None  # MoCHi(N, s, s'): mochi only
    cluster_temperature: float | None = None  # cc only
    oracle: bool = False  # moco/mochi only: drop the queue entries of the query's class (MoCHi's class oracle)


@dataclass(frozen=True)
class Phase:
    """One phase of the refinement: `epochs` at base lr `blr`, neighbours drawn from the top-`topk`, the encoder
    trained or frozen; `epoch_offset` continues the seeded batch stream of the phases before it."""

    name: str
    epochs: int
    blr: float
    topk: int
    trains_encoder: bool
    epoch_offset: int


def phases(cfg: dict) -> tuple[Phase, Phase]:
    """The params refine section's two phases: heads only with top-`head_topk` (MIM-Refiner's stage 2), then
    everything with top-`topk` (stage 3), which continues phase 1's stream (offset `head_epochs`), never replaying
    its batches."""
    return (Phase("heads", cfg["head_epochs"], cfg["head_blr"], cfg["head_topk"], False, 0),
            Phase("full", cfg["epochs"], cfg["blr"], cfg["topk"], True, cfg["head_epochs"]))


def loss_of(cfg: dict, name: str) -> Loss:
    """The Loss of refinement `name` from the params refine section: a variant may set its own false_negatives
    (and moco_momentum, read by `momentum_of`); the others share the section's. A cc variant with CC's own
    instance head (cc_head: official) takes CC's instance temperature, CC_INSTANCE_TEMPERATURE.

    Raises:
        ConfigError: the class oracle on an objective whose negatives are not a queue.
    """
    variant = cfg["variants"][name]
    objective = variant["objective"]
    oracle = variant.get("false_negatives", cfg["false_negatives"]) == "oracle"
    if oracle and not OBJECTIVES[objective].momentum:
        raise ConfigError(f"params: refine.false_negatives = oracle (variant {name}) masks same-class queue "
                          f"negatives of moco/mochi; objective {objective} takes its negatives from the batch (set "
                          f"it on the moco/mochi variants: refine.variants.<name>.false_negatives)")
    temperature = CC_INSTANCE_TEMPERATURE if variant.get("cc_head") == "official" else cfg["temperature"]
    return Loss(objective, temperature, Mixing(**cfg["mochi"]) if OBJECTIVES[objective].mixing else None,
                cfg["cluster_temperature"] if OBJECTIVES[objective].clusters else None, oracle)


# ---- the objectives -----------------------------------------------------------------------------------------------

@dataclass
class HeadBatch:
    """One head's tensors in a step (fp32): projections z and predictions p [V, B, out], cluster probabilities y
    [V, B, M] (cc) or None, the stop-grad anchors [2, B, out] of the global views, view 0's queue neighbour, the
    batch's labels and dataset indices, the head's queue, the (anchor view, prediction view) pairs and this rank's
    row offset in the global batch."""

    z: torch.Tensor
    p: torch.Tensor
    y: torch.Tensor | None
    anchors: torch.Tensor
    nn0: torch.Tensor
    labels: torch.Tensor
    idx: torch.Tensor
    queue: NNQueue
    pairs: list[tuple[int, int]]
    offset: int


Terms = tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]
# (loss per view pair, the positive's softmax mass in the first pair, [B, K] logits of its negatives (-inf: not a
#  negative) or None, extra metrics)


def neighbour_terms(h: HeadBatch, loss: Loss) -> Terms:
    """nna / nnclr: each anchor's queue neighbour is the positive of the other view's prediction; the negatives are
    the other predictions of the global batch, paired with the anchor itself (nna) or its neighbour (nnclr)."""
    b = h.anchors.shape[1]
    nna = loss.objective == "nna"
    nns = (h.nn0, h.queue.query(h.anchors[1], h.idx)[0])
    fn = nna_loss if nna else nnclr_loss
    preds = [distributed.gather(h.p[c], grad=True) for c in range(h.p.shape[0])]  # global-batch negatives
    terms = [fn(h.anchors[a], nns[a], preds[c], loss.temperature, h.offset) for a, c in h.pairs]
    own = h.anchors[0] if nna else h.nn0
    align = positive_mass(own, h.nn0, preds[1], loss.temperature, h.offset)
    with torch.no_grad():
        hardness = nna_logits(own, h.nn0, preds[1], loss.temperature, h.offset)
        rows = torch.arange(b, device=hardness.device)
        hardness = hardness.index_put((rows, rows + h.offset), torch.tensor(float("-inf"), device=hardness.device))
    return terms, align, hardness, {}


def momentum_terms(h: HeadBatch, loss: Loss) -> Terms:
    """moco / mochi: InfoNCE of each prediction against the other view's momentum key, the queue of earlier keys as
    negatives (mochi adds mixed hard negatives)."""
    exclude = h.queue.same_class(h.labels) if loss.oracle else None
    terms = [info_nce_loss(h.p[c], h.anchors[a], h.queue.x, loss.temperature, loss.mixing, exclude=exclude)
             for a, c in h.pairs]
    with torch.no_grad():
        logits = info_nce_logits(h.p[1], h.anchors[0], h.queue.x, loss.temperature, exclude=exclude)
        align = torch.softmax(logits, 1)[:, 0].mean()
    return terms, align, logits[:, 1:], {}


def clustering_terms(h: HeadBatch, loss: Loss) -> Terms:
    """cc: NT-Xent between the projections of view pairs (0, 1) and (global, local), plus the cluster heads'
    column contrast and marginal entropy."""
    terms, align, extra = cc_terms(h.z, h.y, [(0, 1)] + h.pairs[2:], loss.temperature, loss.cluster_temperature)
    return terms, align, None, extra


@dataclass(frozen=True)
class Objective:
    """A refinement objective: its loss terms and what it needs (momentum keys, MoCHi's mixing, cluster heads)."""

    terms: Callable[[HeadBatch, Loss], Terms]
    momentum: bool = False
    mixing: bool = False
    clusters: bool = False


OBJECTIVES: dict[str, Objective] = {
    "nna": Objective(neighbour_terms),
    "nnclr": Objective(neighbour_terms),
    "moco": Objective(momentum_terms, momentum=True),
    "mochi": Objective(momentum_terms, momentum=True, mixing=True),
    "cc": Objective(clustering_terms, clusters=True),
}


# ---- one step -----------------------------------------------------------------------------------------------------

def _check(refiner: Refiner, loss: Loss, keys: MomentumKeys | None) -> Objective:
    if loss.objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {loss.objective!r} (one of {', '.join(OBJECTIVES)})")
    obj = OBJECTIVES[loss.objective]
    if obj.momentum != (keys is not None) or obj.mixing != (loss.mixing is not None):
        raise ValueError(f"objective {loss.objective!r}: momentum keys are for moco/mochi, mixing for mochi only")
    if obj.clusters != bool(refiner.cluster_heads) or obj.clusters != (loss.cluster_temperature is not None):
        raise ValueError(f"objective {loss.objective!r}: cluster heads and cluster_temperature are for cc only")
    if loss.oracle and not obj.momentum:
        raise ValueError(f"objective {loss.objective!r}: the false-negative oracle masks queue negatives (moco/mochi)")
    return obj


def refine_step_fn(refiner: Refiner, fetch: Callable[[object], Views], loss: Loss, keys: MomentumKeys | None = None,
                   ) -> Callable[[object], tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """step_fn(batch) -> (sum over heads of the mean loss term, metrics of the last head).

    `fetch(batch)` gives the views (pipeline/data/views.py: drawn on the device from indices, or the stream's).
    Terms per head: each global view's anchor against the other global view's prediction (symmetric), plus each
    global anchor against each local view's prediction. The anchor is the stop-grad projection of the online
    network (nna, nnclr, cc) or the momentum key (moco, mochi); the queue holds the anchors of global view 0 (of
    both global views for moco/mochi: each key is a negative for later queries), is queried before the push and
    never returns a sample's own entry or a slot that was never filled. Local crops may come at another size,
    with their own token grid (one encoder pass per view size).

    Metrics: pos_mass (the positive's softmax mass in the first term), nn_accuracy and nn_similarity (label
    agreement and cosine of the anchor's nearest queue entry); cc adds cluster_entropy. MoCHi's hardness analysis
    (`moco.negative_top_share`) adds neg_top1_share / neg_top5_share, the share of the negatives' softmax mass in
    the first term held by the hardest 1% / 5%: of the queue for moco/mochi (without the synthetic negatives, so
    both are measured on one set), of the batch for nna/nnclr.

    Under torchrun (as in the official code) the predictions are gathered with their gradients, so NNA/NNCLR
    negatives span the global batch, and every rank pushes the gathered anchors, so all queues stay identical.
    """
    objective = _check(refiner, loss, keys)

    def step(batch: object) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        views, labels, idx = fetch(batch)
        b, v = views[0].shape[0], len(views)
        key_sets = keys.keys(torch.cat(views[:2])) if keys else None
        pairs = [(0, 1), (1, 0)] + [(a, c) for a in (0, 1) for c in range(2, v)]
        total = torch.zeros((), device=views[0].device)
        metrics: dict[str, torch.Tensor] = {}
        for h, (feats, head, queue) in enumerate(zip(refiner.pooled_views(views), refiner.heads, refiner.queues)):
            z, p = head(feats)  # BatchNorm sees all views together, as in the official code
            z, p = z.view(v, b, -1), p.view(v, b, -1)
            y = refiner.cluster_heads[h](feats).view(v, b, -1) if objective.clusters else None
            # the queue and the losses in fp32 under any autocast: softmax over a bf16 similarity matrix loses the
            # small differences between neighbours, and the logits' index_put needs one dtype
            with torch.autocast(z.device.type, enabled=False):
                z, p = z.float(), p.float()
                anchors = (key_sets[h].view(2, b, -1) if key_sets else z[:2].detach()).float()
                nn0, nn_label, nn_sim = queue.query(anchors[0], idx)
                batch_h = HeadBatch(z, p, y, anchors, nn0, labels, idx, queue, pairs, distributed.world().rank * b)
                terms, align, hardness, extra = objective.terms(batch_h, loss)
                total = total + torch.stack(terms).mean()
                for view in (0, 1) if key_sets else (0,):
                    queue.push(*(distributed.gather(t) for t in (anchors[view], idx, labels)))
                metrics = {"pos_mass": align, "nn_accuracy": (nn_label == labels).float().mean(),
                           "nn_similarity": nn_sim.mean(), **extra}
                if hardness is not None:
                    metrics |= {k: negative_top_share(hardness, f) for k, f in TOP_SHARE_FRACTIONS.items()}
        return total, metrics

    return step
