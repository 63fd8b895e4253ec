"""Batched augmentation on tensors, so small datasets stay on the GPU with no host round trip."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline import distributed


def random_resized_crop(images: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        hflip: bool = True, generator: torch.Generator | None = None,
                        size: int | None = None) -> torch.Tensor:
    """RandomResizedCrop + horizontal flip for a whole batch, one crop per image, at the input size (or `size`).

    Crops are drawn as in torchvision (area fraction uniform in `scale`, log-uniform aspect ratio), clipped to
    the image, and resampled bilinearly through one affine grid.

    Args:
        images: [B, C, H, W] float.
        scale: (min, max) area fraction of the crop.
        ratio: (min, max) aspect ratio w/h.
        hflip: flip each image with probability 1/2.
        generator: torch generator on the images' device, for reproducible crops.
        size: output side; None = the input's H and W.
    Returns:
        [B, C, H, W] (or [B, C, size, size]) augmented images.
    """
    b, dev = images.shape[0], images.device
    rand = distributed.rand(b, 4, device=dev, generator=generator)  # per sample, whatever the process count
    area = scale[0] + (scale[1] - scale[0]) * rand[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * rand[:, 1]
    aspect = torch.exp(log_r)
    # crop width/height as fractions of the image side, clipped to the image
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - w) * (2 * rand[:, 2] - 1)  # centre in [-1 + w, 1 - w] (grid units span 2)
    cy = (1 - h) * (2 * rand[:, 3] - 1)
    sx = w
    if hflip:
        flip = distributed.rand(b, device=dev, generator=generator) < 0.5
        sx = torch.where(flip, -w, w)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = sx, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    out_shape = list(images.shape) if size is None else [b, images.shape[1], size, size]
    grid = F.affine_grid(theta, out_shape, align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def mix_batch(images: torch.Tensor, labels: torch.Tensor, num_classes: int, mixup_alpha: float, cutmix_alpha: float,
              smoothing: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix (one of them per batch, 50/50 when both are on) with label smoothing.

    Args:
        images: [B, C, H, W]; labels: [B] int.
        mixup_alpha, cutmix_alpha: Beta(alpha, alpha) parameters; 0 turns that mix off.
        smoothing: label smoothing mass spread over all classes.
    Returns:
        Mixed images and soft targets [B, num_classes] whose rows sum to one.
    """
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=images.device)
    targets.scatter_(1, labels[:, None], 1.0 - smoothing + off)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or torch.rand(1, generator=generator).item() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    if alpha <= 0:
        return images, targets
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    flipped = images.flip(0)
    if use_cutmix:
        h, w = images.shape[-2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(h, (1,), generator=generator)), int(torch.randint(w, (1,), generator=generator))
        y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
        images = images.clone()
        images[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        images = lam * images + (1 - lam) * flipped
    return images, lam * targets + (1 - lam) * targets.flip(0)
