"""Full fine-tuning of a pretrained encoder: mean-pooled tokens, LayerNorm, linear head (MAE's protocol).

MAE's ViT-B recipe (facebookresearch/mae FINETUNE.md, main_finetune.py) adds, per image: RandAugment
("rand-m9-mstd0.5-inc1"), random erasing (probability 0.25, per-pixel noise), and learnable position embeddings
initialized from the pretrained sin-cos table. All three are options here (params evaluate.finetune: rand_augment,
reprob, learnable_pos_embed); off, the step is exactly the plain crop + flip + mixup/cutmix one.
Fine-tuning reads the prepared arrays (there is no streaming fine-tune path), so RandAugment runs timm's own
`rand_augment_transform`, the transform `timm.data.create_transform` builds for that string, on each image of the
batch on the host (PIL), after the device crop; random erasing runs on the device.
"""
from __future__ import annotations

import random
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from timm.data.auto_augment import rand_augment_transform

from pipeline.data.augment import mix_batch, random_resized_crop
from pipeline.data.loader import DeviceImages
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


def random_erase(images: torch.Tensor, prob: float, area: tuple[float, float] = (0.02, 1 / 3),
                 ratio: tuple[float, float] = (0.3, 1 / 0.3)) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020; timm's RandomErasing, mode "pixel", one box): with probability `prob`
    per image, a box of area fraction U(area) and log-uniform aspect ratio is filled with N(0, 1) noise.

    timm redraws a box that does not fit (up to 10 times); here its sides are clipped to the image instead, so one
    draw per image suffices and the batch stays on the device.

    Args:
        images: [B, C, H, W] normalized images (the noise is in normalized units, as timm's).
    Returns:
        [B, C, H, W], a new tensor.
    """
    b, _, h, w = images.shape
    r = torch.rand(b, 5, device=images.device)
    frac = area[0] + (area[1] - area[0]) * r[:, 0]
    aspect = torch.exp(np.log(ratio[0]) + (np.log(ratio[1]) - np.log(ratio[0])) * r[:, 1])
    eh = torch.sqrt(frac * h * w * aspect).round().clamp(1, h)
    ew = torch.sqrt(frac * h * w / aspect).round().clamp(1, w)
    top, left = ((h - eh + 1) * r[:, 2]).floor(), ((w - ew + 1) * r[:, 3]).floor()
    rows = torch.arange(h, device=images.device).view(1, h, 1)
    cols = torch.arange(w, device=images.device).view(1, 1, w)
    box = ((rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1)) & (cols >= left.view(b, 1, 1))
           & (cols < (left + ew).view(b, 1, 1)) & (r[:, 4] < prob).view(b, 1, 1))
    return torch.where(box[:, None], torch.randn_like(images), images)


def rand_augment_fn(config: str, img_size: int, mean: list[float]) -> Callable[[Image.Image], Image.Image]:
    """timm's RandAugment for `config` (e.g. "rand-m9-mstd0.5-inc1") with the hparams `create_transform` passes:
    translations up to 45% of the side, the dataset mean as fill, bicubic resampling (MAE's interpolation)."""
    return rand_augment_transform(config, {"translate_const": int(img_size * 0.45),
                                           "img_mean": tuple(min(255, round(255 * m)) for m in mean),
                                           "interpolation": Image.BICUBIC})


def rand_augment_batch(images: torch.Tensor, data: DeviceImages, transform: Callable[[Image.Image], Image.Image]
                       ) -> torch.Tensor:
    """Apply a PIL transform to each normalized image [B, C, H, W] (via uint8 on the host) and renormalize.

    timm's ops draw from Python's and NumPy's global generators; they are seeded here from torch's (which the
    loop's checkpoints restore) and then restored, so a run is reproducible and nothing else sees the draws.
    """
    pixels = (images * data.std + data.mean).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    saved = random.getstate(), np.random.get_state()
    seed = int(torch.randint(2**31 - 1, (1,)))
    random.seed(seed)
    np.random.seed(seed)
    try:
        out = []
        for p in pixels:  # grayscale goes through RGB: timm's fills are RGB triples
            img = Image.fromarray(p[..., 0], "L").convert("RGB") if p.shape[-1] == 1 else Image.fromarray(p, "RGB")
            res = np.asarray(transform(img).convert("L" if p.shape[-1] == 1 else "RGB"))
            out.append(res.reshape(p.shape))
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    batch = torch.from_numpy(np.stack(out)).to(images.device).permute(0, 3, 1, 2).float()
    return (batch - data.mean) / data.std


def finetune_step_fn(model: Classifier, data: DeviceImages, num_classes: int, crop_scale_min: float,
                     mixup: float, cutmix: float, smoothing: float, reprob: float = 0.0,
                     rand_augment: Callable[[Image.Image], Image.Image] | None = None
                     ) -> Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """step_fn(indices) -> (soft-target cross-entropy, {}) with crops and flips (device), RandAugment (host, if
    given), random erasing with probability `reprob` and mixup/cutmix (device), in timm's order."""
    def step(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            imgs = random_resized_crop(data.batch(idx), (crop_scale_min, 1.0))
            if rand_augment is not None:
                imgs = rand_augment_batch(imgs, data, rand_augment)
            if reprob > 0:
                imgs = random_erase(imgs, reprob)
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
