"""Batched augmentation on tensors, so small datasets stay on the GPU with no host round trip; and fine-tuning's
per-image RandAugment (timm's, on the host) with random erasing (on the device)."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.auto_augment import rand_augment_transform

from pipeline import distributed
from pipeline.data.loader import DeviceImages


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


def src_padding(side: int) -> int:
    """The reflect padding of the simple resized crop at image side `side`: PixMIM's and MFF's 4 px at 224, scaled
    to the side, at least one pixel."""
    return max(1, round(4 * side / 224))


def random_crop_reflect(images: torch.Tensor, pad: int, hflip: bool = True,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """The simple resized crop (SRC) of PixMIM and mmpretrain's MFF configs for a whole batch: RandomCrop at the
    input size from the image padded by `pad` pixels with reflection, then a horizontal flip with probability 1/2.

    Args:
        images: [B, C, H, W] float (already at the model's size: the Resize of the recipe is prepare's).
    Returns:
        [B, C, H, W]: each image shifted by up to `pad` pixels in each direction, edges reflected.
    """
    b, _, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    offsets = (distributed.rand(b, 2, device=dev, generator=generator) * (2 * pad + 1)).long().clamp(max=2 * pad)
    rows = offsets[:, 0, None] + torch.arange(h, device=dev)  # [B, H]
    cols = offsets[:, 1, None] + torch.arange(w, device=dev)  # [B, W]
    out = padded[torch.arange(b, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    out = out.permute(0, 3, 1, 2)
    if hflip:
        flip = distributed.rand(b, device=dev, generator=generator) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out.contiguous()


@dataclass(frozen=True)
class ViewPhotometry:
    """Per-sample probabilities of one view's photometric operations (BYOL's recipe, as in MIM-Refiner)."""

    blur_p: float
    solarize_p: float
    jitter_p: float = 0.8
    gray_p: float = 0.2


# MIM-Refiner's two asymmetric global views (BYOL's pair) and its local crops (docs/methods.md):
# global view 0 always blurred, global view 1 rarely blurred and sometimes solarized, local crops blurred half the time
BYOL_VIEWS = {
    "global0": ViewPhotometry(blur_p=1.0, solarize_p=0.0),
    "global1": ViewPhotometry(blur_p=0.1, solarize_p=0.2),
    "local": ViewPhotometry(blur_p=0.5, solarize_p=0.0),
}

_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma weights, as torchvision's rgb_to_grayscale


def _gray(p: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] in 0..1 -> [B, 1, H, W] luma (the image itself for one channel)."""
    if p.shape[1] == 1:
        return p
    w = torch.tensor(_GRAY, device=p.device, dtype=p.dtype).view(1, 3, 1, 1)
    return (p * w).sum(1, keepdim=True)


def _pick(fire: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per image, `new` where fire ([B] bool) else `old` (a lerp with 0/1 weights: exact, and on CPU several times
    faster than a broadcast torch.where)."""
    return torch.lerp(old, new, fire.view(-1, 1, 1, 1).to(old.dtype))


def _blend(p: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * p + (1 - factor) * other, clamped to 0..1; factor is [B] (1 leaves p as it is)."""
    f = factor.view(-1, 1, 1, 1)
    return (f * p + (1 - f) * other).clamp(0.0, 1.0)


def blur_kernel_size(side: int) -> int:
    """Odd Gaussian kernel spanning about a tenth of the image side, at least 3 (23 at 224 px, 3 at 8 px)."""
    return max(3, 2 * round(0.05 * side) + 1)


def _gaussian_blur(p: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of [B, C, H, W] with one sigma per image ([B]), reflect-padded as torchvision:
    two depthwise convolutions, the images' channels as the groups."""
    b, c, h, w = p.shape
    k = blur_kernel_size(max(h, w))
    half = k // 2
    t = torch.arange(k, device=p.device, dtype=p.dtype) - half
    kern = torch.exp(-t[None] ** 2 / (2 * sigma[:, None] ** 2))
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [B * C, k], one row per image channel
    mode = "reflect" if min(h, w) > half else "replicate"  # reflect needs the pad to be smaller than the side
    flat = F.pad(p.reshape(1, b * c, h, w), (half, half, half, half), mode=mode)
    flat = F.conv2d(flat, kern.view(b * c, 1, 1, k), groups=b * c)
    return F.conv2d(flat, kern.view(b * c, 1, k, 1), groups=b * c).view(b, c, h, w)


def photometric(images: torch.Tensor, mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float],
                jitter_p: float, blur_p: float, solarize_p: float, gray_p: float = 0.2, brightness: float = 0.4,
                contrast: float = 0.4, saturation: float = 0.2, sigma: tuple[float, float] = (0.1, 2.0),
                generator: torch.Generator | None = None) -> torch.Tensor:
    """BYOL's photometric operations on a normalized batch, each image drawing its own decisions and strengths.

    The images are denormalized to 0..1 pixels, transformed in this fixed order, clamped and renormalized:
    1. colour jitter with probability `jitter_p`, its parts in a fixed order (torchvision draws a random one):
       brightness (scale by U(1 - b, 1 + b)), contrast (blend with the image's mean luma, U(1 - c, 1 + c)) and,
       for 3 channels, saturation (blend with the luma image, U(1 - s, 1 + s)). Hue is skipped: it has no meaning
       for greyscale images, which most of our datasets are;
    2. grayscale (luma copied to the 3 channels) with probability `gray_p`; nothing for 1 channel;
    3. Gaussian blur with probability `blur_p`, sigma ~ U(sigma), kernel `blur_kernel_size` of the side;
    4. solarization with probability `solarize_p`: pixels >= 0.5 (128 of 255) become 1 - pixel.

    The random numbers are one `distributed.rand` draw of a fixed width per image, whatever the probabilities, so
    they match for any process count and the draw consumes the same generator state every call. A probability
    of 0 skips that operation's compute (no change), 1 applies it to every image.

    Args:
        images: [B, C, H, W] float, normalized as (pixel - mean) / std.
        mean, std: per-channel statistics on the 0..1 scale ([C] or broadcastable to [1, C, 1, 1]).
        jitter_p, blur_p, solarize_p, gray_p: per-image probabilities of each operation (see `BYOL_VIEWS`).
        brightness, contrast, saturation: jitter strengths (torchvision's ColorJitter arguments).
        sigma: (min, max) of the blur's standard deviation in pixels.
        generator: torch generator on the images' device; None = the global one (as `random_resized_crop`).
    Returns:
        [B, C, H, W] images of the same dtype, normalized the same way.
    """
    b, c = images.shape[:2]
    dev, dtype = images.device, images.dtype
    mean = torch.as_tensor(mean, device=dev, dtype=dtype).reshape(1, c, 1, 1)
    std = torch.as_tensor(std, device=dev, dtype=dtype).reshape(1, c, 1, 1)
    # columns: jitter?, brightness, contrast, saturation, gray?, blur?, sigma, solarize?
    r = distributed.rand(b, 8, device=dev, generator=generator).to(dtype)
    p = (images * std + mean).clamp(0.0, 1.0)

    def strength(u: torch.Tensor, s: float) -> torch.Tensor:  # U(max(0, 1 - s), 1 + s); 1 where jitter is off
        lo = max(0.0, 1.0 - s)
        return torch.where(r[:, 0] < jitter_p, lo + (1.0 + s - lo) * u, torch.ones_like(u))

    if jitter_p > 0:
        p = _blend(p, torch.zeros_like(p), strength(r[:, 1], brightness))
        p = _blend(p, _gray(p).mean((1, 2, 3), keepdim=True), strength(r[:, 2], contrast))
        if c == 3:
            p = _blend(p, _gray(p), strength(r[:, 3], saturation))
    if gray_p > 0 and c == 3:
        p = _pick(r[:, 4] < gray_p, _gray(p).expand_as(p), p)
    if blur_p > 0:
        s = sigma[0] + (sigma[1] - sigma[0]) * r[:, 6]
        p = _pick(r[:, 5] < blur_p, _gaussian_blur(p, s), p)
    if solarize_p > 0:
        p = _pick(r[:, 7] < solarize_p, torch.minimum(p, 1.0 - p), p)  # = 1 - p where p >= 0.5, else p
    return (p.clamp(0.0, 1.0) - mean) / std


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
