"""pretrain[variant]: MAE (or MFF-MAE) pretraining -> results/pretrain/<variant>/{model.pt, metrics.json}.

A variant with `init` starts from that checkpoint (pipeline/train/checkpoint_formats.py); with `epochs: 0` its
model.pt is the imported model, untrained.
"""
from __future__ import annotations

import logging
import sys

import torch
from tqdm import tqdm

from pipeline import distributed
from pipeline.atomic import write_json, write_text
from pipeline.data.stream import mae_transform
from pipeline.data.train_source import train_source
from pipeline.errors import ConfigError
from pipeline.live import live_logger
from pipeline.models.mae import MaskedAutoencoder
from pipeline.models.vit import ViTEncoder
from pipeline.records import records_csv
from pipeline.stages.runner import fingerprint, load_stage_params, plot_csv, run, stage_parser
from pipeline.train import device as rt
from pipeline.train.checkpoint import Checkpointer, save_checkpoint
from pipeline.train.checkpoint_formats import import_weights
from pipeline.train.loop import fit
from pipeline.train.mae_step import loader_images, mae_step_fn
from pipeline.train.optim import adamw, param_groups
from pipeline.train.schedules import warmup_cosine

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
    run_cfg, model_cfg, pre = p["runtime"], p["model"], p["pretrain"]
    variant = pre["variants"][args.variant]
    fuse_blocks = variant["fuse_blocks"]
    # optional keys (params.schema.yaml): absent = trained from scratch for pretrain.epochs
    init, epochs = variant.get("init"), pre["epochs"] if variant.get("epochs") is None else variant["epochs"]

    device = rt.setup_runtime(run_cfg, p["seed"])
    main = distributed.world().main
    d, seed = p["data"], p["seed"]
    train = train_source(d, args.data, seed, pre["batch_size"], device, lambda card: mae_transform(
        card["shape"][0], pre["crop_scale_min"], pre["hflip"], card["mean"], card["std"]))
    h, w, c = train.card["shape"]
    encoder = ViTEncoder(h, model_cfg["patch_size"], c, model_cfg["embed_dim"], model_cfg["depth"],
                         model_cfg["num_heads"], model_cfg["mlp_ratio"])
    model = MaskedAutoencoder(encoder, model_cfg["decoder_embed_dim"], model_cfg["decoder_depth"],
                              model_cfg["decoder_num_heads"], model_cfg["mlp_ratio"], fuse_blocks,
                              variant["fusion"]).to(device)
    started = import_weights(model, init) if init else None  # before anything is written: a bad file writes nothing
    forward = torch.compile(model) if rt.use_compile(device, run_cfg["compile"]) else model

    bs = pre["batch_size"]
    steps_per_epoch = train.size // bs
    if steps_per_epoch == 0:
        raise ConfigError(f"params: pretrain.batch_size={bs} exceeds the {train.size} training images")
    lr = pre["blr"] * bs / 256
    total, warmup = epochs * steps_per_epoch, pre["warmup_epochs"] * steps_per_epoch
    log.info("lr %.3g (blr %.3g x batch %d / 256), %d steps/epoch, device %s", lr, pre["blr"], bs,
             steps_per_epoch, device)
    optimizer = adamw(param_groups(model, pre["weight_decay"]), (pre["beta1"], pre["beta2"]), device)
    step_fn = mae_step_fn(model, forward, train.arrays or loader_images, pre["mask_ratio"], pre["norm_pix_loss"],
                          pre["crop_scale_min"], pre["hflip"])
    # batches do not depend on the worker count, so a killed run may resume with another
    same_run = {**p, "data": {k: v for k, v in p["data"].items() if k != "workers"}}
    ckpt = Checkpointer(args.out / "resume.pt", fingerprint(same_run, args.variant, train.tag))

    # DVCLive must neither edit dvc.yaml nor save an experiment (its defaults outside dvc repro; docs/design.md)
    live = live_logger(str(args.out / "live"), resume=ckpt.path.exists()) if main else None

    def on_epoch(rec: dict[str, float]) -> None:
        for k, v in rec.items():
            if k not in ("epoch", "step"):
                live.log_metric(f"train/{k}", v)
        live.next_step()
        bar.set_postfix(loss=f"{rec['loss']:.4f}")
        log.info("epoch %d: %s", rec["epoch"], {k: round(v, 5) for k, v in rec.items()})

    # the bar is closed on any exit, so an error line starts on a line of its own
    with tqdm(total=total * bs, unit="img", desc=f"pretrain {args.variant}", mininterval=2, file=sys.stderr,
              disable=not main) as bar:
        result = fit(model, step_fn, train.batches, optimizer,
                     lambda s: warmup_cosine(s, total, warmup, lr, pre["min_lr"]), epochs, p["seed"],
                     checkpointer=ckpt, checkpoint_every=pre["checkpoint_every"],
                     autocast=lambda: rt.autocast(device, run_cfg["precision"]), on_step=bar.update,
                     on_epoch=on_epoch)
    if not main:  # rank 0 writes every output
        return
    live.end()

    last = result.history[-1] if result.history else {"loss": None}  # epochs 0: the imported model as is
    weights = model.fusion_weights()
    save_checkpoint(args.out / "model.pt", {
        "arch": dict(encoder.arch), "variant": args.variant, "fuse_blocks": list(fuse_blocks),
        "encoder": {k: v.cpu() for k, v in encoder.state_dict().items()},
        "model": {k: v.cpu() for k, v in model.state_dict().items()}})
    # timings go to the log and DVCLive only: reruns must write identical bytes
    curve = [{k: v for k, v in rec.items() if k != "images_per_s"} for rec in result.history]
    write_text(plot_csv(args.plots, "pretrain_curve", args.variant, args.seed),
               records_csv(curve) if curve else "epoch,step,loss\n")
    write_json(args.out / "metrics.json", {
        "loss": None if last["loss"] is None else round(last["loss"], 6), "epochs": epochs, "steps": result.steps,
        **({"init": started} if started else {}),
        "fusion_weights": {str(b): round(w, 6) for b, w in zip(fuse_blocks, weights)}})
    ckpt.clear()
    log.info("wrote %s/model.pt (final loss %s)", args.out, last["loss"])


if __name__ == "__main__":
    sys.exit(run(main, distributed=True))
