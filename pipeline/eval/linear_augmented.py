"""MIM-Refiner's linear probe (its probe_processor and DINOv2-style grid): the frozen encoder sees RandomResizedCrop'd
and flipped train images every epoch, and one BN + linear head per lr is trained on each of four features, with a
warmup then cosine lr:

- cls_last1: the CLS token of the encoder's output (through the final norm);
- cls_mean_last1: that CLS token concatenated with the mean of the patch tokens;
- cls_last4: the raw CLS tokens of the last four blocks, concatenated;
- cls_mean_last4: the raw CLS token and mean patch token of each of the last four blocks, concatenated.

The (feature, lr) pair is picked on val (centre images), and test is read once with that head. MIM-Refiner reports
the maximum over the grid on its evaluation set; here the pick is on val, as everywhere in this pipeline.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch

from pipeline.data.augment import random_resized_crop
from pipeline.data.loader import ImageSplit
from pipeline.eval.linear import LinearHeads, head_accuracy, picked_head_record
from pipeline.eval.selection import grid_pick
from pipeline.models.vit import ViTEncoder

GRID = ("cls_last1", "cls_mean_last1", "cls_last4", "cls_mean_last4")


def _cls_mean(tokens: torch.Tensor) -> torch.Tensor:
    return torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=1)


@torch.no_grad()
def grid_features(encoder: ViTEncoder, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four features of GRID for a batch [B, C, H, W], float32 (the last four blocks, or all if fewer)."""
    last_four = list(range(max(0, encoder.depth - 4), encoder.depth))
    raw, kept = encoder.run_blocks(encoder.prepend_cls(encoder.embed_patches(images)), last_four)
    out = encoder.norm(raw)
    return {"cls_last1": out[:, 0].float(), "cls_mean_last1": _cls_mean(out).float(),
            "cls_last4": torch.cat([t[:, 0] for t in kept], dim=1).float(),
            "cls_mean_last4": torch.cat([_cls_mean(t) for t in kept], dim=1).float()}


def _centre_features(encoder: ViTEncoder, data: ImageSplit, batch_size: int,
                     autocast: Callable[[], contextlib.AbstractContextManager]) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in GRID}
    for images, _ in data.batches(batch_size):
        with autocast():
            for name, f in grid_features(encoder, images).items():
                parts[name].append(f)
    return {name: torch.cat(v) for name, v in parts.items()}


def warmup_cosine_factor(step: int, total: int, warmup: int) -> float:
    """The lr factor at `step`: linear from 0 over `warmup` steps, then a half cosine to 0 at `total`."""
    if step < warmup:
        return step / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def augmented_linear_probe(encoder: ViTEncoder, splits: dict[str, ImageSplit], num_classes: int, cfg: dict,
                           eval_batch_size: int, seed: int,
                           autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                           ) -> dict:
    """Train the GRID x lrs heads on augmented train crops, pick (feature, lr) on val, read test once.

    Args:
        splits: "train", "val", "test" ImageSplits (normalized images on the device).
        cfg: params evaluate.linear (lrs, epochs, batch_size, weight_decay, crop_scale_min, warmup_fraction).
    Returns:
        linear_probe's record ("lr", "val", "test", "test_correct", "selection" of the chosen feature's lrs) with
        "mode": "augmented", "feature" (the chosen one of GRID) and "grid" (per feature: its val pick and accuracy).
    """
    encoder.eval()
    train = splits["train"]
    device = train.device
    with autocast():
        dims = {k: v.shape[1] for k, v in grid_features(encoder, train.batch(torch.arange(2))).items()}
    torch.manual_seed(seed)  # the heads' initialization
    heads = {name: LinearHeads(dims[name], num_classes, cfg["lrs"], cfg["weight_decay"], device) for name in GRID}
    order_gen = torch.Generator().manual_seed(seed)
    crop_gen = torch.Generator(device=device).manual_seed(seed)
    n, bs = len(train), cfg["batch_size"]
    per_epoch = n // bs  # full batches only: BatchNorm sees equal batches
    total = cfg["epochs"] * per_epoch
    warmup = int(cfg["warmup_fraction"] * total)
    step = 0
    for _ in range(cfg["epochs"]):
        order = torch.randperm(n, generator=order_gen).to(device)
        for start in range(0, per_epoch * bs, bs):
            idx = order[start:start + bs]
            images = random_resized_crop(train.batch(idx), (cfg["crop_scale_min"], 1.0), hflip=True,
                                         generator=crop_gen)
            with autocast():
                feats = grid_features(encoder, images)
            factor = warmup_cosine_factor(step, total, warmup)
            for name in GRID:
                heads[name].step(feats[name], train.labels[idx], factor)
            step += 1
    val = _centre_features(encoder, splits["val"], eval_batch_size, autocast)
    val_y, grid, trained = splits["val"].labels, {}, {name: dict(zip(cfg["lrs"], heads[name].heads())) for name in GRID}
    for name in GRID:
        val_acc = {lr: head_accuracy(h, val[name], val_y) for lr, h in trained[name].items()}
        pick = grid_pick(val_acc, "evaluate.linear.lrs", len(val_y), "argmax")["pick"]
        grid[name] = {"lr": pick, "val": val_acc[pick]}
    best = max(GRID, key=lambda name: grid[name]["val"])  # ties: the first of GRID, the simplest feature
    test = _centre_features(encoder, splits["test"], eval_batch_size, autocast)
    return {"mode": "augmented", "feature": best, "grid": grid,
            **picked_head_record(trained[best], (val[best], val_y), (test[best], splits["test"].labels),
                                 "evaluate.linear.lrs")}
