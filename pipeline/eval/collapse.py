"""The collapse analysis of one model: its features of a fixed validation subset and of two augmented views."""
from __future__ import annotations

import math
from typing import Callable

import torch

from pipeline.analysis.geometry import geometry
from pipeline.data.augment import random_resized_crop
from pipeline.data.loader import DeviceImages
from pipeline.data.splits import stratified_subset

LOG_FLOOR = 1.0e-30  # singular values of exactly 0 are drawn at this floor on the log scale


@torch.no_grad()
def collapse_analysis(embed: Callable[[torch.Tensor], torch.Tensor], val: DeviceImages, images: int,
                      crop_scale_min: float, batch_size: int, seed: int) -> tuple[dict[str, float], list[dict]]:
    """Spectrum, RankMe, hard rank and uniformity of the features of `images` val images; alignment between two
    RandomResizedCrop views of each (scale (crop_scale_min, 1), flips). The subset and the crops depend on
    `seed` only, so every model of a run is measured on the same images and views.

    Args:
        embed: normalized images [B, C, H, W] -> features [B, D].
    Returns:
        (scalar metrics, spectrum rows {index, singular_value, log10_singular_value}).
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
    scalars, spectrum = geometry(z, a, b)
    rows = [{"index": i, "singular_value": float(s), "log10_singular_value": math.log10(max(float(s), LOG_FLOOR))}
            for i, s in enumerate(spectrum)]
    return scalars, rows
