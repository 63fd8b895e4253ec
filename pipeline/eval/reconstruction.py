"""Per-block reconstruction probe (MIM-Refiner, arXiv 2402.10093, its `decoder_per_block` analysis): how much of
the image each block of a frozen encoder still holds, as the masked-patch loss of a fresh MAE decoder trained on
that block's output for the same fixed budget.

With the per-block k-NN (pipeline/eval/probe.py) it gives MIM-Refiner's three regimes of blocks: early (k-NN and
reconstruction improve together), middle (k-NN rises, reconstruction barely moves) and late (reconstruction
improves, k-NN falls: the blocks that serve the pixel decoder).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, ContextManager

import torch
import torch.nn as nn

from pipeline.data.loader import DeviceImages
from pipeline.models.mae import BlockDecoder, patchify, random_masking
from pipeline.models.vit import ViTEncoder
from pipeline.objectives.mae import reconstruction_loss
from pipeline.train.optim import adamw, param_groups
from pipeline.train.schedules import warmup_cosine


@dataclass(frozen=True)
class DecoderRecipe:
    """params `reconstruct`, typed: every block's decoder has this size and this training budget."""

    decoder_embed_dim: int
    decoder_depth: int
    decoder_num_heads: int
    steps: int
    warmup_steps: int
    batch_size: int
    lr: float
    weight_decay: float
    val_images: int

    @classmethod
    def from_params(cls, cfg: dict) -> DecoderRecipe:
        return cls(**{f.name: cfg[f.name] for f in fields(cls)})


def visible_block_outputs(encoder: ViTEncoder, images: torch.Tensor, mask_ratio: float,
                          generator: torch.Generator | None) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """MAE's masking, then every block's output of the visible tokens (with cls): ([B, 1+K, D] per block, mask
    [B, N], ids_restore [B, N]); the encoder is frozen, so no graph is kept."""
    with torch.no_grad():
        kept, mask, ids_restore = random_masking(encoder.embed_patches(images), mask_ratio, generator)
        _, outputs = encoder.run_blocks(encoder.prepend_cls(kept), list(range(encoder.depth)))
    return outputs, mask, ids_restore


def block_losses(decoders: nn.ModuleList, encoder: ViTEncoder, images: torch.Tensor, mask_ratio: float,
                 norm_pix: bool, generator: torch.Generator | None, per_image: bool = False) -> torch.Tensor:
    """The masked-patch loss of each block's decoder on the same images and masks: [depth] ([depth, B] per
    image)."""
    outputs, mask, ids_restore = visible_block_outputs(encoder, images, mask_ratio, generator)
    target = patchify(images, encoder.patch_size)
    return torch.stack([reconstruction_loss(target, dec(out, ids_restore), mask, norm_pix, per_image)
                        for dec, out in zip(decoders, outputs)])


def per_block_reconstruction(encoder: ViTEncoder, train: DeviceImages, val: DeviceImages, recipe: DecoderRecipe,
                             mask_ratio: float, norm_pix: bool, seed: int, device: torch.device,
                             autocast: Callable[[], ContextManager]) -> dict:
    """Train one fresh decoder per block of the frozen `encoder` on train images (uniform draws, fresh masks),
    then score each on `val` with the same seeded masks for every block.

    The decoders train together on one sum of their losses: their parameters are disjoint and AdamW is per
    parameter, so each follows its own loss exactly as if trained alone, on the same batches and masks.
    Returns {"loss" [depth] (val mean), "se" [depth] (its standard error over images), "train_loss" [depth] (the
    last step's), "steps", "images"}.
    """
    encoder.eval().requires_grad_(False)
    torch.manual_seed(seed)  # the decoders' initialization
    decoders = nn.ModuleList(BlockDecoder(encoder, recipe.decoder_embed_dim, recipe.decoder_depth,
                                          recipe.decoder_num_heads, encoder.arch["mlp_ratio"])
                             for _ in range(encoder.depth)).to(device)
    opt = adamw(param_groups(decoders, recipe.weight_decay), (0.9, 0.95), device)
    draws = torch.Generator().manual_seed(seed)
    masks = torch.Generator(device=device).manual_seed(seed)
    losses = torch.zeros(encoder.depth)
    for step in range(recipe.steps):
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(step, recipe.steps, recipe.warmup_steps, recipe.lr, 0.0)
        images = train.batch(torch.randint(len(train), (recipe.batch_size,), generator=draws))
        with autocast():
            losses = block_losses(decoders, encoder, images, mask_ratio, norm_pix, masks)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
    return {**score(decoders, encoder, val, recipe.batch_size, mask_ratio, norm_pix, seed, device, autocast),
            "train_loss": [round(v, 6) for v in losses.detach().float().tolist()], "steps": recipe.steps}


@torch.no_grad()
def score(decoders: nn.ModuleList, encoder: ViTEncoder, val: DeviceImages, batch_size: int, mask_ratio: float,
          norm_pix: bool, seed: int, device: torch.device, autocast: Callable[[], ContextManager]) -> dict:
    """Mean val loss per block with its standard error over images (one seeded mask draw, shared by the blocks)."""
    decoders.eval()
    gen = torch.Generator(device=device).manual_seed(seed + 1)  # not the training masks' stream
    per_image = []  # [depth, B] per batch
    for start in range(0, len(val), batch_size):
        images = val.batch(torch.arange(start, min(start + batch_size, len(val))))
        with autocast():
            per_image.append(block_losses(decoders, encoder, images, mask_ratio, norm_pix, gen, per_image=True))
    loss = torch.cat(per_image, dim=1).float()  # [depth, images]
    se = loss.std(dim=1) / loss.shape[1] ** 0.5
    return {"loss": [round(v, 6) for v in loss.mean(dim=1).tolist()], "se": [round(v, 6) for v in se.tolist()],
            "images": loss.shape[1]}
