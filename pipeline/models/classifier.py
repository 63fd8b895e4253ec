"""The fine-tuning classifier: an encoder, fc_norm and a linear head over the mean-pooled patch tokens (MAE's
fine-tuning with global pool), and the layer of each of its parameters for layer-wise lr decay."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from pipeline.models.vit import ViTEncoder


class Classifier(nn.Module):
    """Encoder + fc_norm + linear head over the mean of the patch tokens (MAE fine-tuning with global pool)."""

    def __init__(self, encoder: ViTEncoder, num_classes: int, learnable_pos_embed: bool = False):
        super().__init__()
        self.encoder = encoder
        encoder.norm.requires_grad_(False)  # global pooling + fc_norm replace the final norm (MAE drops it)
        if learnable_pos_embed:  # MAE fine-tunes timm's learnable table, loaded with the pretrained sin-cos one
            table = encoder.pos_embed.detach().clone()
            del encoder.pos_embed  # the fixed buffer
            encoder.pos_embed = nn.Parameter(table)
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
