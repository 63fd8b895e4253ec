"""MAE (or MFF-MAE) pretraining: the recipe of params pretrain, the run, and what model.pt and metrics.json keep."""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline.data.train_source import TrainData
from pipeline.errors import ConfigError
from pipeline.live import live_logger
from pipeline.models.mae import MaskedAutoencoder
from pipeline.train import device as rt
from pipeline.train.checkpoint import Checkpointer
from pipeline.train.loop import FitResult, fit
from pipeline.train.mae_step import loader_images, mae_step_fn
from pipeline.train.optim import adamw, param_groups
from pipeline.train.schedules import warmup_cosine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainRecipe:
    """params pretrain (params.schema.yaml has each key) but its variants, typed; epochs is the variant's own."""

    epochs: int
    warmup_epochs: int
    batch_size: int
    blr: float
    min_lr: float
    weight_decay: float
    beta1: float
    beta2: float
    mask_ratio: float
    norm_pix_loss: bool
    crop_scale_min: float
    hflip: bool
    checkpoint_every: int
    augment: str  # the variant's: "rrc" (MAE's RandomResizedCrop) or "src" (MFF's simple resized crop)
    fusion_lr_scale: float  # the variant's: the MFF fusion logits' lr relative to the rest
    fusion_weight_decay: float  # the variant's: the logits' weight decay (0, as every 1-D tensor; mmpretrain: 0.05)

    @classmethod
    def from_params(cls, pre: dict, variant: dict) -> PretrainRecipe:
        """The recipe of params pretrain for one of its variants, values as the params file gives them."""
        # optional key (params.schema.yaml): absent = trained for pretrain.epochs
        epochs = pre["epochs"] if variant.get("epochs") is None else variant["epochs"]
        own = {"augment": "rrc", "fusion_lr_scale": 1.0, "fusion_weight_decay": 0.0}  # optional variant keys
        return cls(**{f.name: pre[f.name] for f in fields(cls) if f.name not in (*own, "epochs")}, epochs=epochs,
                   **{k: variant.get(k, default) for k, default in own.items()})


def pretrain(model: MaskedAutoencoder, train: TrainData, recipe: PretrainRecipe, seed: int, device: torch.device,
             runtime: dict, checkpointer: Checkpointer, live_dir: Path | None, name: str) -> FitResult:
    """Train `model` on `train` for `recipe.epochs` (warmup + cosine lr, AdamW), resuming from `checkpointer`.

    Args:
        runtime: params runtime (precision, compile).
        live_dir: the DVCLive folder of the epoch metrics; None on ranks other than 0 (no DVCLive, no progress bar).
        name: the variant, named on the progress bar.
    """
    forward = torch.compile(model) if rt.use_compile(device, runtime["compile"]) else model
    bs = recipe.batch_size
    steps_per_epoch = train.size // bs
    if steps_per_epoch == 0:
        raise ConfigError(f"params: pretrain.batch_size={bs} exceeds the {train.size} training images")
    lr = recipe.blr * bs / 256
    total, warmup = recipe.epochs * steps_per_epoch, recipe.warmup_epochs * steps_per_epoch
    log.info("lr %.3g (blr %.3g x batch %d / 256), %d steps/epoch, device %s", lr, recipe.blr, bs,
             steps_per_epoch, device)
    optimizer = adamw(pretrain_groups(model, recipe), (recipe.beta1, recipe.beta2), device)
    step_fn = mae_step_fn(model, forward, train.arrays or loader_images, recipe.mask_ratio, recipe.norm_pix_loss,
                          recipe.crop_scale_min, recipe.hflip, recipe.augment)
    main = live_dir is not None
    # DVCLive must neither edit dvc.yaml nor save an experiment (its defaults outside dvc repro; docs/design.md)
    live = live_logger(str(live_dir), resume=checkpointer.path.exists()) if main else None

    def on_epoch(rec: dict[str, float]) -> None:
        for k, v in rec.items():
            if k not in ("epoch", "step"):
                live.log_metric(f"train/{k}", v)
        live.next_step()
        bar.set_postfix(loss=f"{rec['loss']:.4f}")
        log.info("epoch %d: %s", rec["epoch"], {k: round(v, 5) for k, v in rec.items()})

    # the bar is closed on any exit, so an error line starts on a line of its own
    with tqdm(total=total * bs, unit="img", desc=f"pretrain {name}", mininterval=2, file=sys.stderr,
              disable=not main) as bar:
        result = fit(model, step_fn, train.batches, optimizer,
                     lambda s: warmup_cosine(s, total, warmup, lr, recipe.min_lr), recipe.epochs, seed,
                     checkpointer=checkpointer, checkpoint_every=recipe.checkpoint_every,
                     autocast=lambda: rt.autocast(device, runtime["precision"]), on_step=bar.update,
                     on_epoch=on_epoch)
    if live is not None:
        live.end()
    return result


def pretrain_groups(model: MaskedAutoencoder, recipe: PretrainRecipe) -> list[dict]:
    """MAE's weight-decay groups; an MFF variant with its own fusion lr scale or weight decay gets its fusion
    logits in a group of their own (the lr budget of the logits decides how far the fusion weights can move)."""
    groups = param_groups(model, recipe.weight_decay)
    if model.fusion is None or (recipe.fusion_lr_scale == 1.0 and recipe.fusion_weight_decay == 0.0):
        return groups
    logits = model.fusion.logits
    for g in groups:
        g["params"] = [p for p in g["params"] if p is not logits]
    return groups + [{"params": [logits], "weight_decay": recipe.fusion_weight_decay,
                      "lr_scale": recipe.fusion_lr_scale}]


def pretrained_state(model: MaskedAutoencoder, variant: str, fuse_blocks: list[int]) -> dict:
    """model.pt of a pretrained variant: the encoder's arch and weights (what downstream stages read), and the
    whole autoencoder's weights."""
    return {"arch": dict(model.encoder.arch), "variant": variant, "fuse_blocks": list(fuse_blocks),
            "encoder": {k: v.cpu() for k, v in model.encoder.state_dict().items()},
            "model": {k: v.cpu() for k, v in model.state_dict().items()}}


def pretrain_outputs(result: FitResult, epochs: int, started: dict | None, fuse_blocks: list[int],
                     weights: list[float]) -> tuple[list[dict[str, float]], dict]:
    """(the loss curve rows, metrics.json) of a run; timings go to the log and DVCLive only, so reruns write
    identical bytes. `started`: what the variant was initialized from (import_weights), None from scratch."""
    last = result.history[-1] if result.history else {"loss": None}  # epochs 0: the imported model as is
    curve = [{k: v for k, v in rec.items() if k != "images_per_s"} for rec in result.history]
    return curve, {"loss": None if last["loss"] is None else round(last["loss"], 6), "epochs": epochs,
                   "steps": result.steps, **({"init": started} if started else {}),
                   "fusion_weights": {str(b): round(w, 6) for b, w in zip(fuse_blocks, weights)}}
