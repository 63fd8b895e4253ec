"""refine[refined]: contrastive refinement of a probed encoder (MIM-Refiner) -> results/refine/<refined>/model.pt.

The variant names its pretrained encoder and its objective (nna, or the nnclr/moco/mochi/cc ablations; cc adds a
cluster head of refine.cluster_k clusters per head block, saved with the heads in model.pt's "refiner"). The encoder
keeps every block (refine.depth: full) and ID heads sit from the probe's chosen block to the last (refine.heads:
probe), as MIM-Refiner places them. Phase 1 trains the heads on the frozen encoder (top-1 neighbours); phase 2
trains everything with layer-wise lr decay (neighbours drawn from the top-k) and continues phase 1's random
stream instead of replaying it. model.pt holds the EMA of the encoder (what evaluation reads first) and the
online encoder; metrics.json reports how much of the pretrained weights the EMA still holds. Each phase resumes
after a kill.
"""
from __future__ import annotations

import json
import logging
import sys

import torch

from pipeline import distributed
from pipeline.atomic import write_json, write_text
from pipeline.data.loader import DeviceImages
from pipeline.data.prepared import load_prepared
from pipeline.data.splits import stratified_subset
from pipeline.data.stream import multiview_transform
from pipeline.data.train_source import train_source
from pipeline.errors import ConfigError
from pipeline.eval.features import pooled_features
from pipeline.eval.knn import knn_accuracy
from pipeline.live import live_logger
from pipeline.objectives.moco import Mixing
from pipeline.records import records_csv
from pipeline.stages.runner import fingerprint, load_stage_params, plot_csv, run, stage_parser
from pipeline.train import device as rt
from pipeline.train.checkpoint import Checkpointer, load_encoder, save_checkpoint
from pipeline.train.finetune import layer_of
from pipeline.train.loop import fit
from pipeline.train.optim import adamw, layer_decay_groups
from pipeline.train.queue import EMA, start_share
from pipeline.train.refine_step import (
    MOMENTUM_OBJECTIVES,
    MomentumKeys,
    Refiner,
    head_blocks,
    loader_views,
    refine_step_fn,
)
from pipeline.train.schedules import warmup_cosine

log = logging.getLogger(__name__)

# the params keys this stage reads: its rule's params in rules/ (pipeline/deps.py), and so its dvc.yaml params
PARAMS = (
    "seed", "runtime.device", "runtime.threads", "runtime.precision", "runtime.compile", "runtime.nproc",
    "refine.variants.{variant}",  # only this variant's entry: adding an ablation reruns no other
    "refine.depth", "refine.heads", "refine.head_epochs", "refine.head_topk", "refine.ema_warmup", "refine.epochs", "refine.warmup_epochs",
    "refine.batch_size", "refine.head_blr", "refine.blr", "refine.layer_decay", "refine.weight_decay",
    "refine.head_weight_decay", "refine.beta1", "refine.beta2", "refine.temperature", "refine.queue_size",
    "refine.topk", "refine.proj_hidden", "refine.proj_out", "refine.pred_hidden", "refine.global_scale_min",
    "refine.photometric",
    "refine.local_crops", "refine.local_size", "refine.local_scale", "refine.ema", "refine.moco_momentum",
    "refine.mochi", "refine.cluster_k", "refine.cluster_temperature", "refine.false_negatives",
    "refine.checkpoint_every", "refine.monitor_bank", "refine.monitor_val",
    "data.stream", "data.root", "data.workers", "data.val_size",  # the stream reads root/train less the val hold-out
)


# the EMA may keep at most this share of the pretrained weights at the configured budget (a bad-input error)
MAX_START_SHARE = 0.5


def refinement_depth(choice: str | int, probed: int, depth: int) -> int:
    """refine.depth: full -> every block (the default, as MIM-Refiner), probe -> cut after the probe's chosen block
    (an ablation: its report row comes with a cut-only control), an int -> that many blocks."""
    value = {"probe": probed, "full": depth}.get(choice, choice)
    if not isinstance(value, int) or not 1 <= value <= depth:
        raise ConfigError(f"params: refine.depth = {choice!r} is outside 1..{depth} (the encoder has {depth} blocks)")
    return value


def refinement_phases(cfg: dict) -> list[tuple[str, int, float, int, bool, int]]:
    """(name, epochs, base lr, neighbour top-k, trains the encoder, epoch offset) of the two phases, from the params
    refine section: heads only with top-`head_topk` (MIM-Refiner's stage 2), then everything with top-`topk`
    (stage 3). Phase 2 continues phase 1's seeded stream (offset `head_epochs`), so it never replays its batches."""
    return [("heads", cfg["head_epochs"], cfg["head_blr"], cfg["head_topk"], False, 0),
            ("full", cfg["epochs"], cfg["blr"], cfg["topk"], True, cfg["head_epochs"])]


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("refine", __doc__, True, {
        "data": "results/data/<dataset>",
        "model": "results/pretrain/<pretrained>/model.pt",
        "probe": "results/probe/<pretrained>/blocks.json",
        "out": "results/refine/<refined>",
        "plots": "results/plots (the curve goes to refine_curve/)",
    })
    args = parser.parse_args(argv)
    p = load_stage_params("refine", PARAMS, args.params, args.variant, ("refine",), args.seed)
    run_cfg, cfg, seed = p["runtime"], p["refine"], p["seed"]
    variant = cfg["variants"][args.variant]
    objective = variant["objective"]
    # a variant may set its own MoCo momentum (the momentum-0 ablation); others share refine.moco_momentum
    moco_momentum = variant.get("moco_momentum", cfg["moco_momentum"])
    # MoCHi's class oracle: a variant's own setting, else refine.false_negatives; only queue negatives can be masked
    oracle = variant.get("false_negatives", cfg["false_negatives"]) == "oracle"
    if oracle and objective not in MOMENTUM_OBJECTIVES:
        raise ConfigError(f"params: refine.false_negatives = oracle (variant {args.variant}) masks same-class queue "
                          f"negatives of moco/mochi; objective {objective} takes its negatives from the batch (set "
                          f"it on the moco/mochi variants: refine.variants.<name>.false_negatives)")

    device = rt.setup_runtime(run_cfg, seed)
    encoder, ckpt = load_encoder(args.model)
    source = cfg["variants"][args.variant]["pretrained"]
    if ckpt.get("variant", source) != source:  # dvc.yaml lists each refinement's source: rewrite it after a change
        raise ConfigError(f"params: refine.variants.{args.variant}.pretrained = {source!r} but --model holds "
                          f"{ckpt['variant']!r} (after changing it: make dvc.yaml)")
    probed = json.loads(args.probe.read_text())["depth"]  # the chosen block + 1
    full_depth = encoder.depth
    depth = refinement_depth(cfg["depth"], probed, full_depth)
    try:
        blocks = head_blocks(cfg["heads"], probed - 1, depth)
    except ValueError as err:
        raise ConfigError(f"params: refine.heads = {cfg['heads']!r}: {err}") from None
    encoder.truncate(depth)
    data = load_prepared(args.data)  # the k-NN monitor reads the arrays on the stream path too
    clusters = (cfg["cluster_k"] or data.num_classes) if objective == "cc" else 0  # null: the dataset's classes
    refiner = Refiner(encoder, blocks, cfg["proj_hidden"], cfg["proj_out"], cfg["pred_hidden"], cfg["queue_size"],
                      cfg["head_topk"], clusters).to(device)
    if distributed.world().size > 1:  # head BatchNorm statistics over the global batch, as one process sees it
        distributed.convert_sync_batchnorm(refiner.heads)
    ema = EMA(encoder, cfg["ema"], cfg["ema_warmup"])
    keys = MomentumKeys(refiner, moco_momentum) if objective in MOMENTUM_OBJECTIVES else None
    mixing = Mixing(**cfg["mochi"]) if objective == "mochi" else None

    stats = (data.card["mean"], data.card["std"], device)
    bs = cfg["batch_size"]
    train = train_source(p["data"], args.data, seed, bs, device, lambda card: multiview_transform(
        card["shape"][0], cfg["local_size"] or card["shape"][0], cfg["local_crops"], cfg["global_scale_min"],
        cfg["local_scale"], card["mean"], card["std"]), data)
    mon_bank = stratified_subset(data.y["train"], min(cfg["monitor_bank"], data.y["train"].size), seed)
    mon_val = stratified_subset(data.y["val"], min(cfg["monitor_val"], data.y["val"].size), seed)
    monitor = (DeviceImages(data.x["train"][mon_bank], data.y["train"][mon_bank], *stats),
               DeviceImages(data.x["val"][mon_val], data.y["val"][mon_val], *stats))
    steps = train.size // bs
    if steps == 0:
        raise ConfigError(f"params: refine.batch_size={bs} exceeds the {train.size} training images")
    share = start_share(cfg["ema"], cfg["epochs"] * steps, cfg["ema_warmup"])
    if share > MAX_START_SHARE:
        raise ConfigError(f"params: refine.ema = {cfg['ema']} (ema_warmup {cfg['ema_warmup']}) leaves {share:.0%} of "
                          f"the pretrained weights in the refined model after {cfg['epochs'] * steps} steps; lower it "
                          f"or turn on refine.ema_warmup")
    step_fn = refine_step_fn(refiner, train.arrays or loader_views, objective, cfg["temperature"],
                             cfg["global_scale_min"], cfg["local_crops"], tuple(cfg["local_scale"]), keys, mixing,
                             cfg["local_size"] or None, cfg["photometric"],
                             cfg["cluster_temperature"] if objective == "cc" else None, oracle)
    # batches do not depend on the worker count, so a killed run may resume with another
    same_run = {**p, "data": {k: v for k, v in p["data"].items() if k != "workers"}}
    tag = fingerprint(same_run, args.variant, train.tag, ckpt["arch"], depth)
    live = live_logger(str(args.out / "live"), resume=any(args.out.glob("resume-*.pt"))) \
        if distributed.world().main else None

    phase = {"name": ""}  # the log names the phase each epoch belongs to (epochs count on across phases)

    def on_epoch(rec: dict[str, float]) -> None:
        # k-NN of the EMA encoder on a held-out subset: collapse shows here while it trains
        bank, val = (pooled_features(ema.module, d, 1024)["cls"] for d in monitor)
        rec["knn"] = knn_accuracy(bank, monitor[0].labels, val, monitor[1].labels, 20, 0.07)
        for k, v in rec.items():
            if k not in ("epoch", "step"):
                live.log_metric(f"refine/{k}", v)
        live.next_step()
        log.info("%s phase, epoch %d: %s", phase["name"], rec["epoch"], {k: round(v, 5) for k, v in rec.items()})

    def after_step(train_encoder: bool):
        # the key network follows heads and encoder in both phases; the evaluation EMA only when the encoder trains
        def update() -> None:
            if train_encoder:
                ema.update(encoder)
            if keys:
                keys.update(refiner)
        return update if train_encoder or keys else None

    history = []
    for name, epochs, blr, topk, train_encoder, offset in refinement_phases(cfg):
        if epochs == 0:
            continue
        encoder.requires_grad_(train_encoder)
        phase["name"] = name
        for queue in refiner.queues:
            queue.topk = topk
        groups = layer_decay_groups(refiner, depth + 1, layer_of(depth), cfg["weight_decay"], cfg["layer_decay"])
        for g in groups:  # heads (scale 1, the only decayed weights there) use the heads' weight decay
            if g["lr_scale"] == 1.0 and g["weight_decay"] > 0:
                g["weight_decay"] = cfg["head_weight_decay"]
        opt = adamw(groups, (cfg["beta1"], cfg["beta2"]), device)
        lr, warm = blr * bs / 256, min(cfg["warmup_epochs"], epochs - 1) * steps
        result = fit(refiner, step_fn, train.batches, opt,
                     lambda s: warmup_cosine(s, epochs * steps, warm, lr, 1.0e-6), epochs, seed,
                     checkpointer=Checkpointer(args.out / f"resume-{name}.pt", f"{tag}-{name}"),
                     checkpoint_every=cfg["checkpoint_every"], on_epoch=on_epoch,
                     extra_state={"ema": ema, **({"keys": keys} if keys else {})},
                     autocast=lambda: rt.autocast(device, run_cfg["precision"]),
                     after_step=after_step(train_encoder), epoch_offset=offset)
        history += [{"phase": float(train_encoder), **r} for r in result.history]
    if not distributed.world().main:  # rank 0 writes every output
        return
    live.end()

    save_checkpoint(args.out / "model.pt", {
        "arch": dict(encoder.arch), "variant": args.variant, "objective": objective, "depth": depth,
        "head_blocks": refiner.blocks, "full_depth": full_depth,
        "encoder": {k: v.cpu() for k, v in ema.module.state_dict().items()},
        "online_encoder": {k: v.cpu() for k, v in encoder.state_dict().items()},
        "refiner": {k: v.cpu() for k, v in refiner.state_dict().items()}})
    write_text(plot_csv(args.plots, "refine_curve", args.variant, args.seed), records_csv(
        [{k: v for k, v in r.items() if k != "images_per_s"} | {"epoch": i + 1} for i, r in enumerate(history)]))
    last = history[-1]
    write_json(args.out / "metrics.json", {
        "depth": depth, "heads": len(refiner.blocks), "first_head_block": refiner.blocks[0],
        # the pretrained encoder's weight in the written (EMA) model: m ** steps, or the product of warmup momenta
        "ema_pretrained_share": float(f"{start_share(cfg['ema'], int(ema.updates), cfg['ema_warmup']):.6g}"),
        **{k: round(last[k], 6) for k in ("loss", "pos_mass", "nn_accuracy", "nn_similarity", "knn", "cluster_entropy",
                                          "neg_top1_share", "neg_top5_share")
           if k in last}})
    for name in ("heads", "full"):
        (args.out / f"resume-{name}.pt").unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(run(main, distributed=True))
