"""Images held on the compute device as uint8, normalized per batch: small datasets never touch the host."""
from __future__ import annotations

import numpy as np
import torch

from pipeline import distributed
from pipeline.data.prepared import Prepared


class ImageSplit:
    """One split as evaluation and training read it: labels [N] on `device`, images normalized per batch with the
    train mean/std. Subclasses say where a batch's uint8 rows come from: held on the device (DeviceImages) or
    decoded from image files on demand (pipeline/data/folder_split.py, the full train split of an ImageFolder).

    Args:
        y: [N] int64 labels.
        mean, std: per-channel statistics on the 0..1 scale.
        device: where labels and batches live.
    """

    size: int  # the images' side in pixels

    def __init__(self, y: np.ndarray, mean: list[float], std: list[float], device: torch.device):
        self.labels = torch.from_numpy(y).to(device)
        # [1, C, 1, 1] on the 0..1 scale (what photometric augmentations denormalize with), and on the 0..255 one
        self.pixel_mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.pixel_std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.mean, self.std = self.pixel_mean * 255.0, self.pixel_std * 255.0

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """uint8 images [B, C, H, W] on the device at the indices `idx`."""
        raise NotImplementedError

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Normalized float images [B, C, H, W] at the indices `idx`."""
        return (self.rows(idx).float() - self.mean) / self.std

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None):
        """Yield (images, labels) of rows start..stop in order, the last batch possibly smaller (feature
        extraction)."""
        stop = len(self) if stop is None else stop
        for lo in range(start, stop, batch_size):
            idx = torch.arange(lo, min(lo + batch_size, stop), device=self.device)
            yield self.batch(idx), self.labels[idx]


class DeviceImages(ImageSplit):
    """One split held on `device`: images [N, C, H, W] uint8 (from [N, H, W, C] numpy `x`), labels [N]."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean: list[float], std: list[float], device: torch.device):
        super().__init__(y, mean, std, device)
        self.images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
        self.size = self.images.shape[-1]

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx]


def epoch_order(n: int, batch_size: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """Shuffled indices of one epoch as [steps, batch_size], dropping the ragged tail; under torchrun, this rank's
    [steps, batch_size / processes] slice of every global batch.

    The order depends only on (seed, epoch), so a run resumed at an epoch boundary sees the same batches.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    steps = n // batch_size
    order = torch.randperm(n, generator=g)[: steps * batch_size].view(steps, batch_size)
    return distributed.shard(order).to(device)


def device_splits(data: Prepared, device: torch.device) -> dict[str, DeviceImages]:
    """The splits of a prepared dataset (train, val and test unless it was loaded with fewer) on `device`."""
    return {s: DeviceImages(data.x[s], data.y[s], data.card["mean"], data.card["std"], device) for s in data.x}
