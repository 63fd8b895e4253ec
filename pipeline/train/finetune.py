"""Full fine-tuning of a pretrained encoder: mean-pooled tokens, LayerNorm, linear head (MAE's protocol)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.data.augment import mix_batch, random_resized_crop
from pipeline.data.loader import DeviceImages
from pipeline.models.vit import ViTEncoder


class Classifier(nn.Module):
    """Encoder + fc_norm + linear head over the mean of the patch tokens (MAE fine-tuning with global pool)."""

    def __init__(self, encoder: ViTEncoder, num_classes: int):
        super().__init__()
        self.encoder = encoder
        encoder.norm.requires_grad_(False)  # global pooling + fc_norm replace the final norm (MAE drops it)
        self.fc_norm = nn.LayerNorm(encoder.embed_dim, eps=1e-6)
        self.head = nn.Linear(encoder.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder.embed_patches(x)
        tokens, _ = self.encoder.run_blocks(self.encoder.prepend_cls(tokens), [])
        return self.head(self.fc_norm(tokens[:, 1:].mean(dim=1)))


def layer_of(depth: int) -> Callable[[str], int]:
    """Parameter name -> layer for layer-wise decay: embeddings 0, block i -> i + 1, the rest (head) depth + 1."""
    def layer(name: str) -> int:
        if name.startswith(("encoder.patch_embed", "encoder.cls_token", "encoder.pos_embed")):
            return 0
        if name.startswith("encoder.blocks."):
            return int(name.split(".")[2]) + 1
        return depth + 1
    return layer


def finetune_step_fn(model: Classifier, data: DeviceImages, num_classes: int, crop_scale_min: float,
                     mixup: float, cutmix: float, smoothing: float
                     ) -> Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """step_fn(indices) -> (soft-target cross-entropy, {}) with crops, flips, mixup/cutmix on the device."""
    def step(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            imgs = random_resized_crop(data.batch(idx), (crop_scale_min, 1.0))
            imgs, targets = mix_batch(imgs, data.labels[idx], num_classes, mixup, cutmix, smoothing)
        logits = model(imgs)
        return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean(), {}
    return step


@torch.no_grad()
def classifier_accuracy(model: Classifier, data: DeviceImages, batch_size: int) -> float:
    """Top-1 accuracy (0..1) on a split, without augmentation."""
    model.eval()
    correct = 0
    for images, labels in data.batches(batch_size):
        correct += int((model(images).argmax(dim=1) == labels).sum())
    return correct / len(data)
