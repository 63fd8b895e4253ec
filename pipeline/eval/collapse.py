"""The collapse analysis of one model: its features of a fixed validation subset and of two augmented views."""
from __future__ import annotations

import math
from typing import Callable

import torch

from pipeline.data.augment import random_resized_crop
from pipeline.data.loader import DeviceImages
from pipeline.data.splits import stratified_subset
from pipeline.eval.geometry import geometry

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
    idx = torch.from_numpy(stratified_subset(labels, min(images, labels.size), seed)).to(val.device)
    gen = torch.Generator(device=val.device).manual_seed(seed)
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
