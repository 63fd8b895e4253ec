"""evaluate[variant]: k-NN, linear probe, few-shot, k-means and (if epochs > 0) fine-tuning of an encoder.

Writes results/evaluate/<variant>/{metrics.json (headline numbers), details.json (per-lr, per-split runs)} and
the covariance spectra of its features, raw, centred and standardized, to results/plots/spectrum/<variant>.csv (the
collapse analysis). A refined model also gets the analysis of its embedding, the last head's projector output:
metrics embedding_*, its spectra in details.json's embedding_spectrum.
Frozen features are the encoder's output tokens (after the final norm; a cut encoder has none, so its last kept
block's raw output), pooled as CLS and mean-patch; lr choices read val, test is read once.

A refined model is evaluated with two companions on the frozen protocols: its online encoder (model.pt holds the
EMA and the online weights; metrics online_*) and, when refinement cut the encoder, the cut-only control (the
pretrained encoder of --pretrained cut at the same depth and not trained; metrics control_*). A cc refinement's
cluster head (model.pt's "refiner") also scores its own argmax assignments on test next to k-means on the features:
metrics cluster_head_{acc,nmi,ari,used} (EMA encoder) and online_cluster_head_* (the encoder it trained with).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from pipeline import distributed
from pipeline.atomic import write_json, write_text
from pipeline.data.loader import DeviceImages, device_splits, epoch_order
from pipeline.data.prepared import load_prepared
from pipeline.eval.collapse import collapse_analysis, embedding_metrics, last_head_embedding
from pipeline.eval.clustering import cluster_head_scores
from pipeline.eval.features import pooled_features
from pipeline.eval.suite import flat_metrics, frozen_protocols
from pipeline.models.vit import ViTEncoder, pool_tokens
from pipeline.records import records_csv
from pipeline.stages.runner import fingerprint, load_stage_params, plot_csv, run, stage_parser
from pipeline.train import device as rt
from pipeline.train.checkpoint import Checkpointer, hash_state, load_encoder, load_module_state
from pipeline.train.finetune import Classifier, classifier_accuracy, finetune_step_fn, layer_of, rand_augment_fn
from pipeline.train.loop import fit
from pipeline.train.refine_step import saved_cluster_head
from pipeline.train.optim import adamw, layer_decay_groups
from pipeline.train.schedules import warmup_cosine

log = logging.getLogger(__name__)

# the params keys this stage reads: its rule's params in rules/ (pipeline/deps.py), and so its dvc.yaml params
PARAMS = ("seed", "runtime.device", "runtime.threads", "runtime.precision", "runtime.compile", "runtime.nproc",
          "evaluate")

# the metrics of the online encoder and the cut-only control kept in metrics.json (details.json has them all)
COMPANION_METRICS = ("knn", "linear", "fewshot", "cluster_head")


def cluster_head_metrics(result: dict) -> dict[str, float]:
    """cluster_head_<score> of a protocols result that scored a cc refinement's cluster head (empty otherwise)."""
    return {f"cluster_head_{k}": round(v, 6) for k, v in result.get("cluster_head", {}).items()}


def finetune(arch: dict, state: dict, splits: dict[str, DeviceImages], num_classes: int, cfg: dict, seed: int,
             device: torch.device, precision: str, checkpointer: Checkpointer) -> dict:
    """Fine-tune a copy of the encoder end to end with layer-wise lr decay; val and test accuracy at the end.

    Resumes from `checkpointer` after a kill, and saves to it every `cfg["checkpoint_every"]` epochs.
    """
    encoder = ViTEncoder(**arch, drop_path_rate=cfg["drop_path"])
    load_module_state(encoder, state, "fine-tune encoder")
    model = Classifier(encoder, num_classes, cfg["learnable_pos_embed"]).to(device)
    groups = layer_decay_groups(model, encoder.depth + 1, layer_of(encoder.depth), cfg["weight_decay"],
                                cfg["layer_decay"])
    opt = adamw(groups, (0.9, 0.999), device)
    train, bs = splits["train"], cfg["batch_size"]
    steps = max(1, len(train) // bs)
    lr = cfg["blr"] * bs / 256
    augment = (rand_augment_fn(cfg["rand_augment"], train.images.shape[-1], train.pixel_mean.flatten().tolist())
               if cfg["rand_augment"] else None)
    step_fn = finetune_step_fn(model, train, num_classes, cfg["crop_scale_min"], cfg["mixup"], cfg["cutmix"],
                               cfg["smoothing"], cfg["reprob"], augment)
    fit(model, step_fn, lambda e: epoch_order(len(train), bs, seed, e, device), opt,
        lambda s: warmup_cosine(s, cfg["epochs"] * steps, cfg["warmup_epochs"] * steps, lr, 1.0e-6),
        cfg["epochs"], seed, checkpointer=checkpointer, checkpoint_every=cfg["checkpoint_every"],
        autocast=lambda: rt.autocast(device, precision))
    checkpointer.clear()
    return {s: classifier_accuracy(model, splits[s], bs) for s in ("val", "test")}


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("evaluate", __doc__, True, {
        "data": "results/data/<dataset>",
        "model": "model.pt of a pretrained or refined encoder",
        "out": "results/evaluate/<model>",
        "plots": "results/plots (the spectrum goes to spectrum/<variant>.csv)",
    })
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="a refined model's pretrained model.pt: evaluated cut at the refined depth when "
                             "refinement cut the encoder (the cut-only control)")
    args = parser.parse_args(argv)
    p = load_stage_params("evaluate", PARAMS, args.params, args.variant, seed=args.seed)
    run_cfg, cfg = p["runtime"], p["evaluate"]

    device = rt.setup_runtime(run_cfg, p["seed"])
    encoder, ckpt = load_encoder(args.model)
    data = load_prepared(args.data)
    splits = device_splits(data, device)
    # under torchrun every rank embeds a shard and fine-tunes; rank 0 runs the frozen protocols and writes
    main = distributed.world().main
    labels = {s: d.labels for s, d in splits.items()}

    # a cc refinement's own clustering: its last cluster head on the CLS output of the encoders it was trained with
    cluster_head = saved_cluster_head(ckpt["refiner"], str(args.model)) if "refiner" in ckpt else None

    def protocols(model: ViTEncoder, clustered: bool = False) -> dict:
        """The frozen protocols of `model` (every rank embeds its shard; rank 0 gets the results), and the cluster
        head's scores on test if `clustered` and the model has one."""
        model.to(device)
        feats = {s: pooled_features(model, d, cfg["batch_size"], lambda: rt.autocast(device, run_cfg["precision"]),
                                    sharded=True) for s, d in splits.items()}
        if not main:
            return {}
        out = frozen_protocols(feats, labels, data.fewshot, data.num_classes, cfg, p["seed"])
        if clustered and cluster_head is not None:
            out["cluster_head"] = cluster_head_scores(cluster_head.to(device), feats["test"]["cls"], labels["test"])
        return out

    result = protocols(encoder, clustered=True)
    companions = {}
    if "online_encoder" in ckpt:
        companions["online"] = ViTEncoder(**ckpt["arch"])
        load_module_state(companions["online"], ckpt["online_encoder"], f"{args.model}:online_encoder")
    if args.pretrained is not None and ckpt.get("full_depth", encoder.depth) > encoder.depth:
        control, _ = load_encoder(args.pretrained)
        control.truncate(encoder.depth)
        companions["control"] = control
    for name, model in companions.items():
        result[name] = protocols(model, clustered=name == "online")
    if main:
        geo = cfg["geometry"]

        def embed(images: torch.Tensor) -> torch.Tensor:
            with rt.autocast(device, run_cfg["precision"]):
                return pool_tokens(encoder.forward_features(images), cfg["feature"])

        def collapse(fn) -> tuple[dict, list[dict]]:
            return collapse_analysis(fn, splits["val"], geo["images"], geo["crop_scale_min"], cfg["batch_size"],
                                     p["seed"])

        result["geometry"], spectrum = collapse(embed)
        if "refiner" in ckpt:  # a refined model: also where its loss acts, the last head's projector output
            head_embed, block = last_head_embedding(ckpt, str(args.model))
            with rt.autocast(device, run_cfg["precision"]):
                scalars, rows = collapse(head_embed)
            result["geometry"] |= embedding_metrics(scalars) | {"embedding_head_block": block}
            result["embedding_spectrum"] = rows
        write_text(plot_csv(args.plots, "spectrum", args.variant, args.seed), records_csv(spectrum))
    if cfg["finetune"]["epochs"] > 0:
        resume = Checkpointer(args.out / "resume-finetune.pt",
                              fingerprint(p, data.card["sha256"], ckpt["arch"], hash_state(ckpt["encoder"])))
        result["finetune"] = finetune(ckpt["arch"], ckpt["encoder"], splits, data.num_classes, cfg["finetune"],
                                      p["seed"], device, run_cfg["precision"], resume)
    if not main:
        return
    result["test_size"] = len(splits["test"])  # the n of every test accuracy's binomial standard error
    write_json(args.out / "details.json", result)
    write_json(args.out / "metrics.json", flat_metrics(result) | cluster_head_metrics(result) | {
        f"{name}_{k}": v for name in companions
        for k, v in (flat_metrics(result[name]) | cluster_head_metrics(result[name])).items()
        if k.startswith(COMPANION_METRICS)})
    log.info("%s: %s", args.variant, flat_metrics(result))


if __name__ == "__main__":
    sys.exit(run(main, distributed=True))
