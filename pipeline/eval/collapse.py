"""The collapse analysis of one model: its features of a fixed validation subset and of two augmented views."""
from __future__ import annotations

import math
from typing import Callable

import torch

from pipeline.analysis.geometry import geometry
from pipeline.data.augment import random_resized_crop
from pipeline.data.loader import DeviceImages
from pipeline.data.splits import stratified_subset
from pipeline.errors import CheckpointError
from pipeline.models.heads import mlp
from pipeline.models.vit import ViTEncoder
from pipeline.train.checkpoint import load_module_state
from pipeline.train.refine_step import head_features

LOG_FLOOR = 1.0e-30  # singular values of exactly 0 are drawn at this floor on the log scale
EMBEDDING = "embedding"  # a refined model's projector output of its last head block (where its loss acts)


@torch.no_grad()
def collapse_analysis(embed: Callable[[torch.Tensor], torch.Tensor], val: DeviceImages, images: int,
                      crop_scale_min: float, batch_size: int, seed: int) -> tuple[dict[str, float], list[dict]]:
    """Spectrum, RankMe, hard rank and uniformity of the features of `images` val images; alignment between two
    RandomResizedCrop views of each (scale (crop_scale_min, 1), flips). The subset and the crops depend on
    `seed` only, so every model of a run is measured on the same images and views.

    Args:
        embed: normalized images [B, C, H, W] -> features [B, D].
    Returns:
        (scalar metrics: `geometry.geometry`'s, rankme_/hard_rank_/top_eigen_share_ named by their preprocessing;
        spectrum rows {index, log10_singular_value_<preprocessing> for raw, centred, standardized}).
    """
    labels = val.labels.cpu().numpy()
    idx = torch.from_numpy(stratified_subset(labels, min(images, labels.size), seed)).to(val.images.device)
    gen = torch.Generator(device=val.images.device).manual_seed(seed)
    feats: dict[str, list[torch.Tensor]] = {"clean": [], "a": [], "b": []}
    for chunk in idx.split(batch_size):
        x = val.batch(chunk)
        feats["clean"].append(embed(x).float())
        for view in ("a", "b"):
            feats[view].append(embed(random_resized_crop(x, (crop_scale_min, 1.0), generator=gen)).float())
    z, a, b = (torch.cat(feats[k]).cpu() for k in ("clean", "a", "b"))
    scalars, spectra = geometry(z, a, b)
    width = len(next(iter(spectra.values())))
    rows = [{"index": i, **{f"log10_singular_value_{how}": math.log10(max(float(s[i]), LOG_FLOOR))
                            for how, s in spectra.items()}} for i in range(width)]
    return scalars, rows


def embedding_metrics(scalars: dict[str, float]) -> dict[str, float]:
    """The collapse metrics of a refined model's embedding, named as such ("embedding_rankme_raw"); the backbone
    feature's keep their plain names."""
    return {f"{EMBEDDING}_{k}": v for k, v in scalars.items()}


def last_head_embedding(ckpt: dict, source: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """The embedding of a refined model.pt: the online encoder's CLS feature of the last head block (raw block
    output, or through the final norm at the encoder's last block, as refinement reads it) through that head's
    projector in eval mode (BatchNorm on its running statistics).

    Returns:
        (normalized images [B, C, H, W] -> embeddings [B, out] (call under no_grad; modules on the images' device),
        the 0-based head block).
    """
    refiner, blocks = ckpt["refiner"], ckpt["head_blocks"]
    head = len(blocks) - 1
    prefix = f"heads.{head}.projector."
    state = {k.removeprefix(prefix): v for k, v in refiner.items() if k.startswith(prefix)}
    linears = sorted(int(k.split(".")[0]) for k in state if k.endswith("weight") and state[k].ndim == 2)
    if not linears:
        raise CheckpointError(f"{source}: refiner state has no {prefix}* weights (not a refined model.pt?)")
    dims = [state[f"{linears[0]}.weight"].shape[1]] + [state[f"{i}.weight"].shape[0] for i in linears]
    projector = mlp(dims)
    load_module_state(projector, state, f"{source}:{prefix}")
    encoder = ViTEncoder(**ckpt["arch"])
    load_module_state(encoder, ckpt["online_encoder"], f"{source}:online_encoder")
    encoder.eval(), projector.eval()

    def embed(images: torch.Tensor) -> torch.Tensor:
        encoder.to(images.device), projector.to(images.device)
        return projector(head_features(encoder, images, blocks)[-1].float())

    return embed, blocks[-1]
