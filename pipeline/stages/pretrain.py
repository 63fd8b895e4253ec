"""pretrain[variant]: MAE (or MFF-MAE) pretraining -> results/pretrain/<variant>/{model.pt, metrics.json}.

A variant with `init` starts from that checkpoint (pipeline/train/checkpoint_formats.py); with `epochs: 0` its
model.pt is the imported model, untrained.
"""
from __future__ import annotations

import logging
import sys

from pipeline import distributed
from pipeline.atomic import write_json, write_text
from pipeline.config import variant_model
from pipeline.data.stream import mae_transform
from pipeline.data.train_source import train_source
from pipeline.models.mae import ModelSpec
from pipeline.records import plot_csv, records_csv
from pipeline.stages.runner import fingerprint, load_stage_params, run, stage_parser
from pipeline.train import device as rt
from pipeline.train.checkpoint import Checkpointer, save_checkpoint
from pipeline.train.checkpoint_formats import import_weights
from pipeline.train.pretrain import PretrainRecipe, pretrain, pretrain_outputs, pretrained_state

log = logging.getLogger(__name__)

# the params keys this stage reads: its rule's params in rules/ (pipeline/deps.py), and so its dvc.yaml params
PARAMS = (
    "seed", "runtime.device", "runtime.threads", "runtime.precision", "runtime.compile", "runtime.nproc", "model",
    "pretrain.variants.{variant}",  # only this variant's entry: adding a variant reruns no other
    "pretrain.mask_ratio", "pretrain.norm_pix_loss", "pretrain.epochs", "pretrain.warmup_epochs",
    "pretrain.batch_size", "pretrain.blr", "pretrain.min_lr", "pretrain.weight_decay", "pretrain.beta1",
    "pretrain.beta2", "pretrain.crop_scale_min", "pretrain.hflip", "pretrain.checkpoint_every",
    "data.stream", "data.root", "data.workers", "data.val_size",  # the stream reads root/train less the val hold-out
)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("pretrain", __doc__, True, {
        "data": "results/data/<dataset>",
        "out": "results/pretrain/<variant>",
        "plots": "results/plots (the curve goes to pretrain_curve/)",
    })
    args = parser.parse_args(argv)
    p = load_stage_params("pretrain", PARAMS, args.params, args.variant, ("pretrain",), args.seed)
    run_cfg, pre = p["runtime"], p["pretrain"]
    variant = pre["variants"][args.variant]
    fuse_blocks, init = variant["fuse_blocks"], variant.get("init")  # optional: absent = trained from scratch
    recipe = PretrainRecipe.from_params(pre, variant)

    device = rt.setup_runtime(run_cfg, p["seed"])
    main = distributed.world().main
    train = train_source(p["data"], args.data, p["seed"], recipe.batch_size, device, lambda card: mae_transform(
        card["shape"][0], recipe.crop_scale_min, recipe.hflip, card["mean"], card["std"], recipe.augment))
    h, w, c = train.card["shape"]
    spec = ModelSpec.from_params(variant_model(p["model"], variant))
    model = spec.autoencoder(spec.encoder(h, c), fuse_blocks, variant["fusion"]).to(device)
    started = import_weights(model, init) if init else None  # before anything is written: a bad file writes nothing
    # batches do not depend on the worker count, so a killed run may resume with another
    same_run = {**p, "data": {k: v for k, v in p["data"].items() if k != "workers"}}
    ckpt = Checkpointer(args.out / "resume.pt", fingerprint(same_run, args.variant, train.tag))
    result = pretrain(model, train, recipe, p["seed"], device, run_cfg, ckpt, args.out / "live" if main else None,
                      args.variant)
    if not main:  # rank 0 writes every output
        return
    curve, metrics = pretrain_outputs(result, recipe.epochs, started, fuse_blocks, model.fusion_weights())
    save_checkpoint(args.out / "model.pt", pretrained_state(model, args.variant, fuse_blocks))
    write_text(plot_csv(args.plots, "pretrain_curve", args.variant, args.seed),
               records_csv(curve) if curve else "epoch,step,loss\n")
    write_json(args.out / "metrics.json", metrics)
    ckpt.clear()
    log.info("wrote %s/model.pt (final loss %s)", args.out, metrics["loss"])


if __name__ == "__main__":
    sys.exit(run(main, distributed=True))
