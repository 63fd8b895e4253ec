"""The MAE/MFF pretraining step: fetch augmented images, mask, reconstruct, score masked patches.

Images come either from arrays on the device (crops drawn here, on the device) or from the stream's DataLoader
(crops drawn by its workers); a `fetch` callable turns a batch of either kind into images.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from pipeline.data.augment import random_crop_reflect, random_resized_crop, src_padding
from pipeline.data.loader import DeviceImages
from pipeline.models.mae import MaskedAutoencoder
from pipeline.objectives.mae import reconstruction_loss

Fetch = Callable[[Any], torch.Tensor]


def device_crops(data: DeviceImages, crop_scale_min: float, hflip: bool, augment: str = "rrc") -> Fetch:
    """fetch(indices [B]) -> images [B, C, H, W] of `data`, RandomResizedCrop'd (scale (min, 1); augment "rrc") or
    reflect-padded and RandomCrop'd ("src"), and flipped."""
    def fetch(idx: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            images = data.batch(idx)
            if augment == "src":
                return random_crop_reflect(images, src_padding(images.shape[-1]), hflip=hflip)
            return random_resized_crop(images, (crop_scale_min, 1.0), hflip=hflip)

    return fetch


def loader_images(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """fetch((images, labels, indices)) -> images: the stream's workers have already augmented them."""
    return batch[0]


def mae_step_fn(model: MaskedAutoencoder, forward: nn.Module | Callable, data: DeviceImages | Fetch,
                mask_ratio: float, norm_pix: bool, crop_scale_min: float, hflip: bool, augment: str = "rrc"
                ) -> Callable[[Any], tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Build step_fn(batch) -> (loss, metrics) for the training loop.

    Args:
        model: the MAE (for patchify and the fusion weights).
        forward: what runs the forward pass: `model` itself or its torch.compile'd twin.
        data: the train split on the device (a batch is indices [B]), or a fetch callable batch -> augmented
            images (`loader_images` for the stream, whose batches are (images, labels)).
        mask_ratio, norm_pix: MAE masking and target normalization.
        crop_scale_min, hflip, augment: the device crops (device_crops; a fetch callable brings its own
            augmentation).
    """
    fetch = device_crops(data, crop_scale_min, hflip, augment) if isinstance(data, DeviceImages) else data

    def step(batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        imgs = fetch(batch)
        pred, mask = forward(imgs, mask_ratio)
        loss = reconstruction_loss(model.patchify(imgs), pred, mask, norm_pix)
        metrics = {}
        if model.fusion is not None:
            metrics = {f"fusion_w{b}": w for b, w in zip(model.fusion.blocks, model.fusion.weights().detach())}
        return loss, metrics

    return step


def fixed_batch_loss(model: MaskedAutoencoder, images: torch.Tensor, mask_ratio: float, norm_pix: bool, seed: int,
                     batch_size: int) -> Callable[[], torch.Tensor]:
    """loss() -> the pretraining loss of `model` on `images` with masks that are the same at every call (one
    seeded draw per batch of `batch_size`): the function a sharpness measure differentiates twice."""
    chunks = images.split(batch_size)

    def loss() -> torch.Tensor:
        gen = torch.Generator(device=images.device).manual_seed(seed)
        total = images.new_zeros(())
        for imgs in chunks:
            pred, mask = model(imgs, mask_ratio, gen)
            total = total + reconstruction_loss(model.patchify(imgs), pred, mask, norm_pix) * len(imgs)
        return total / len(images)

    return loss

