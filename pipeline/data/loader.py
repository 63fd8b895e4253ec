"""Images held on the compute device as uint8, normalized per batch: small datasets never touch the host."""
from __future__ import annotations

import numpy as np
import torch

from pipeline import distributed
from pipeline.data.prepared import Prepared


class DeviceImages:
    """One split on `device`: images [N, C, H, W] uint8 and labels [N], with the train mean/std.

    Args:
        x: [N, H, W, C] uint8 numpy images.
        y: [N] int64 labels.
        mean, std: per-channel statistics on the 0..1 scale.
        device: where the tensors live.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, mean: list[float], std: list[float], device: torch.device):
        self.images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
        self.labels = torch.from_numpy(y).to(device)
        # [1, C, 1, 1] on the 0..1 scale (what photometric augmentations denormalize with), and on the 0..255 one
        self.pixel_mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.pixel_std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.mean, self.std = self.pixel_mean * 255.0, self.pixel_std * 255.0

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Normalized float images [B, C, H, W] at the indices `idx`."""
        return (self.images[idx].float() - self.mean) / self.std

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None):
        """Yield (images, labels) of rows start..stop in order, the last batch possibly smaller (feature
        extraction)."""
        stop = len(self) if stop is None else stop
        for lo in range(start, stop, batch_size):
            idx = torch.arange(lo, min(lo + batch_size, stop), device=self.images.device)
            yield self.batch(idx), self.labels[idx]


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
    """The train, val and test splits of a prepared dataset on `device`."""
    return {s: DeviceImages(data.x[s], data.y[s], data.card["mean"], data.card["std"], device)
            for s in ("train", "val", "test")}
