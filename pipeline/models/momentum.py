"""MoCo's key network for the moco and mochi refinement ablations (He et al., arXiv 1911.05722; MoCo v3, Chen et
al., arXiv 2104.02057): a moving average of the refiner's encoder and projectors, with v3's cosine momentum schedule
and keys whose projector BatchNorm uses running statistics (no batch leak between a query and its key)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from pipeline.models.queue import EMA
from pipeline.models.refiner import Refiner, head_features


class MomentumKeys(nn.Module):
    """MoCo's key network: a moving average of the refiner's encoder and projectors (no predictor).

    Args:
        refiner: the online network; its current weights start the average.
        momentum: m in key = m * key + (1 - m) * online, applied after every optimizer step.
        schedule: "constant" (MoCo v1/v2) or "cosine" (MoCo v3: m rises from `momentum` to 1 along a half cosine
            over `total_updates`).
        total_updates: the optimizer steps of the whole refinement (both phases): the cosine's length.
    """

    def __init__(self, refiner: Refiner, momentum: float, schedule: str = "constant", total_updates: int = 0):
        super().__init__()
        if schedule not in ("constant", "cosine") or (schedule == "cosine" and total_updates < 1):
            raise ValueError(f"momentum schedule {schedule!r} over {total_updates} updates")
        self.blocks = list(refiner.blocks)
        self.encoder = EMA(refiner.encoder, momentum)
        self.projectors = EMA(refiner.projectors(), momentum)
        self.base, self.schedule, self.total = momentum, schedule, total_updates

    @torch.no_grad()
    def update(self, refiner: Refiner) -> None:
        m = key_momentum(self.base, int(self.encoder.updates), self.total, self.schedule)
        self.encoder.momentum = self.projectors.momentum = m
        self.encoder.update(refiner.encoder)
        self.projectors.update(refiner.projectors())

    @torch.no_grad()
    def keys(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[N, C, H, W] -> one [N, out] key per head block. The projectors' BatchNorm uses its running statistics
        (the average of the online ones), not the batch's: a key depends on its own image only, so the batch
        statistics cannot tell the query its positive (MoCo's "BN cheating", which ShuffleBN breaks)."""
        self.projectors.module.eval()
        feats = head_features(self.encoder.module, images, self.blocks)
        return [proj(f) for proj, f in zip(self.projectors.module, feats)]


def key_momentum(base: float, t: int, total: int, schedule: str) -> float:
    """The key momentum at update t (0-based): `base`, or MoCo v3's 1 - (1 - base) (1 + cos(π t / total)) / 2."""
    if schedule == "constant":
        return base
    return 1.0 - (1.0 - base) * (1.0 + math.cos(math.pi * min(t, total) / total)) / 2.0


def momentum_of(cfg: dict, name: str) -> tuple[float, str]:
    """MoCo's key momentum and its schedule for refinement `name` (its own, as the momentum-0 ablation sets, or the
    section's)."""
    own = cfg["variants"][name]
    return (own.get("moco_momentum", cfg["moco_momentum"]),
            own.get("moco_momentum_schedule", cfg["moco_momentum_schedule"]))
