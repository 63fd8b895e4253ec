"""The MAE/MFF pretraining step: augment on the device, mask, reconstruct, score masked patches."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from pipeline.data.augment import random_resized_crop
from pipeline.data.loader import DeviceImages
from pipeline.models.mae import MaskedAutoencoder
from pipeline.objectives.mae import reconstruction_loss


def mae_step_fn(model: MaskedAutoencoder, forward: nn.Module | Callable, data: DeviceImages, mask_ratio: float,
                norm_pix: bool, crop_scale_min: float, hflip: bool
                ) -> Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Build step_fn(indices [B]) -> (loss, metrics) for the training loop.

    Args:
        model: the MAE (for patchify and the fusion weights).
        forward: what runs the forward pass: `model` itself or its torch.compile'd twin.
        data: the train split on the device.
        mask_ratio, norm_pix: MAE masking and target normalization.
        crop_scale_min, hflip: RandomResizedCrop scale (min, 1) and flips.
    """
    def step(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            imgs = random_resized_crop(data.batch(idx), (crop_scale_min, 1.0), hflip=hflip)
        pred, mask = forward(imgs, mask_ratio)
        loss = reconstruction_loss(model.patchify(imgs), pred, mask, norm_pix)
        metrics = {}
        if model.fusion is not None:
            metrics = {f"fusion_w{b}": w for b, w in zip(model.fusion.blocks, model.fusion.weights().detach())}
        return loss, metrics

    return step
