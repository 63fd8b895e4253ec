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
from pathlib import Path

from pipeline import distributed
from pipeline.atomic import write_json, write_text
from pipeline.data.loader import DeviceImages
from pipeline.data.prepared import Prepared, load_prepared
from pipeline.data.splits import stratified_subset
from pipeline.data.stream import multiview_transform
from pipeline.data.train_source import train_source
from pipeline.data.views import device_views, loader_views
from pipeline.errors import ConfigError
from pipeline.eval.features import pooled_features
from pipeline.eval.knn import knn_accuracy
from pipeline.live import live_logger
from pipeline.models.queue import EMA, start_share
from pipeline.models.momentum import MomentumKeys, momentum_of
from pipeline.models.refiner import OBJECTIVES, Refiner, head_blocks, loss_of, phases, refine_step_fn
from pipeline.records import plot_csv, records_csv
from pipeline.stages.runner import fingerprint, load_stage_params, run, stage_parser
from pipeline.train import device as rt
from pipeline.train.checkpoint import load_encoder, save_checkpoint
from pipeline.train.refine import Run, Schedule, train_phases

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
    "refine.moco_momentum_schedule",
    "refine.mochi", "refine.cluster_k", "refine.cluster_temperature", "refine.false_negatives",
    "refine.checkpoint_every", "refine.monitor_bank", "refine.monitor_val",
    "data.stream", "data.root", "data.workers", "data.val_size",  # the stream reads root/train less the val hold-out
)


# the EMA may keep at most this share of the pretrained weights at the configured budget (a bad-input error)
MAX_START_SHARE = 0.5
METRICS = ("loss", "pos_mass", "nn_accuracy", "nn_similarity", "knn", "cluster_entropy", "neg_top1_share",
           "neg_top5_share")


def refinement_depth(choice: str | int, probed: int, depth: int) -> int:
    """refine.depth: full -> every block (the default, as MIM-Refiner), probe -> cut after the probe's chosen block
    (an ablation: its report row comes with a cut-only control), an int -> that many blocks."""
    value = {"probe": probed, "full": depth}.get(choice, choice)
    if not isinstance(value, int) or not 1 <= value <= depth:
        raise ConfigError(f"params: refine.depth = {choice!r} is outside 1..{depth} (the encoder has {depth} blocks)")
    return value


def probed_encoder(cfg: dict, name: str, model: Path, probe: Path):
    """The pretrained encoder cut to the refinement depth, its checkpoint, full depth and head blocks."""
    encoder, ckpt = load_encoder(model)
    source = cfg["variants"][name]["pretrained"]
    if ckpt.get("variant", source) != source:  # dvc.yaml lists each refinement's source: rewrite it after a change
        raise ConfigError(f"params: refine.variants.{name}.pretrained = {source!r} but --model holds "
                          f"{ckpt['variant']!r} (after changing it: make dvc.yaml)")
    probed = json.loads(probe.read_text())["depth"]  # the chosen block + 1
    full_depth = encoder.depth
    depth = refinement_depth(cfg["depth"], probed, full_depth)
    try:
        blocks = head_blocks(cfg["heads"], probed - 1, depth)
    except ValueError as err:
        raise ConfigError(f"params: refine.heads = {cfg['heads']!r}: {err}") from None
    encoder.truncate(depth)
    return encoder, ckpt, full_depth, blocks


def knn_monitor(data: Prepared, cfg: dict, seed: int, device):
    """ema encoder -> k-NN accuracy on held-out subsets of train (bank) and val: collapse shows while it trains."""
    stats = (data.card["mean"], data.card["std"], device)
    bank = stratified_subset(data.y["train"], min(cfg["monitor_bank"], data.y["train"].size), seed)
    val = stratified_subset(data.y["val"], min(cfg["monitor_val"], data.y["val"].size), seed)
    sets = (DeviceImages(data.x["train"][bank], data.y["train"][bank], *stats),
            DeviceImages(data.x["val"][val], data.y["val"][val], *stats))

    def accuracy(encoder) -> float:
        feats_bank, feats_val = (pooled_features(encoder, d, 1024)["cls"] for d in sets)
        return knn_accuracy(feats_bank, sets[0].labels, feats_val, sets[1].labels, 20, 0.07)

    return accuracy


def check_budget(cfg: dict, size: int) -> int:
    """Steps per epoch; a batch larger than the data or an EMA that would keep the pretrained weights is refused."""
    steps = size // cfg["batch_size"]
    if steps == 0:
        raise ConfigError(f"params: refine.batch_size={cfg['batch_size']} exceeds the {size} training images")
    share = start_share(cfg["ema"], cfg["epochs"] * steps, cfg["ema_warmup"])
    if share > MAX_START_SHARE:
        raise ConfigError(f"params: refine.ema = {cfg['ema']} (ema_warmup {cfg['ema_warmup']}) leaves {share:.0%} of "
                          f"the pretrained weights in the refined model after {cfg['epochs'] * steps} steps; lower it "
                          f"or turn on refine.ema_warmup")
    return steps


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
    loss = loss_of(cfg, args.variant)
    device = rt.setup_runtime(run_cfg, seed)
    encoder, ckpt, full_depth, blocks = probed_encoder(cfg, args.variant, args.model, args.probe)
    data = load_prepared(args.data)  # the k-NN monitor reads the arrays on the stream path too
    objective = OBJECTIVES[loss.objective]
    clusters = (cfg["cluster_k"] or data.num_classes) if objective.clusters else 0  # null: the dataset's classes
    refiner = Refiner(encoder, blocks, cfg["proj_hidden"], cfg["proj_out"], cfg["pred_hidden"], cfg["queue_size"],
                      cfg["head_topk"], clusters, cfg["variants"][args.variant].get("cc_head", "shared")).to(device)
    if distributed.world().size > 1:  # head BatchNorm statistics over the global batch, as one process sees it
        distributed.convert_sync_batchnorm(refiner.heads)
    ema = EMA(encoder, cfg["ema"], cfg["ema_warmup"])
    train = train_source(p["data"], args.data, seed, cfg["batch_size"], device, lambda card: multiview_transform(
        card["shape"][0], cfg["local_size"] or card["shape"][0], cfg["local_crops"], cfg["global_scale_min"],
        cfg["local_scale"], card["mean"], card["std"]), data)
    monitor = knn_monitor(data, cfg, seed, device)
    steps = check_budget(cfg, train.size)
    keys = (MomentumKeys(refiner, *momentum_of(cfg, args.variant), (cfg["head_epochs"] + cfg["epochs"]) * steps)
            if objective.momentum else None)
    fetch = device_views(train.arrays, cfg["global_scale_min"], cfg["local_crops"], tuple(cfg["local_scale"]),
                         cfg["local_size"] or None, cfg["photometric"]) if train.arrays else loader_views
    # batches do not depend on the worker count, so a killed run may resume with another
    same_run = {**p, "data": {k: v for k, v in p["data"].items() if k != "workers"}}
    tag = fingerprint(same_run, args.variant, train.tag, ckpt["arch"], encoder.depth)
    live = live_logger(str(args.out / "live"), resume=any(args.out.glob("resume-*.pt"))) \
        if distributed.world().main else None

    def on_epoch(phase: str, rec: dict[str, float]) -> None:
        rec["knn"] = monitor(ema.module)
        for k, v in rec.items():
            if k not in ("epoch", "step"):
                live.log_metric(f"refine/{k}", v)
        live.next_step()
        log.info("%s phase, epoch %d: %s", phase, rec["epoch"], {k: round(v, 5) for k, v in rec.items()})

    history = train_phases(Run(refiner, ema, keys, refine_step_fn(refiner, fetch, loss, keys), train.batches, steps,
                               seed, device, run_cfg["precision"], args.out, tag),
                           phases(cfg), Schedule.from_params(cfg), on_epoch)
    if distributed.world().main:  # rank 0 writes every output
        live.end()
        write_outputs(args, refiner, ema, encoder, full_depth, history, cfg)


def write_outputs(args, refiner: Refiner, ema: EMA, encoder, full_depth: int, history: list[dict], cfg: dict) -> None:
    """model.pt (the EMA encoder first: what evaluation reads; the online encoder and the heads), the curve and
    metrics.json (with the share of the pretrained weights the EMA still holds); the resume checkpoints go."""
    save_checkpoint(args.out / "model.pt", {
        "arch": dict(encoder.arch), "variant": args.variant, "objective": cfg["variants"][args.variant]["objective"],
        "depth": encoder.depth, "head_blocks": refiner.blocks, "full_depth": full_depth,
        "encoder": {k: v.cpu() for k, v in ema.module.state_dict().items()},
        "online_encoder": {k: v.cpu() for k, v in encoder.state_dict().items()},
        "refiner": {k: v.cpu() for k, v in refiner.state_dict().items()}})
    write_text(plot_csv(args.plots, "refine_curve", args.variant, args.seed), records_csv(
        [{k: v for k, v in r.items() if k != "images_per_s"} | {"epoch": i + 1} for i, r in enumerate(history)]))
    last = history[-1]
    write_json(args.out / "metrics.json", {
        "depth": encoder.depth, "heads": len(refiner.blocks), "first_head_block": refiner.blocks[0],
        # the pretrained encoder's weight in the written (EMA) model: m ** steps, or the product of warmup momenta
        "ema_pretrained_share": float(f"{start_share(cfg['ema'], int(ema.updates), cfg['ema_warmup']):.6g}"),
        **{k: round(last[k], 6) for k in METRICS if k in last}})
    for name in ("heads", "full"):
        (args.out / f"resume-{name}.pt").unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(run(main, distributed=True))
