"""The full train split of an ImageFolder tree, decoded batch by batch: evaluate's train split with
`evaluate.train_split: full`.

MAE fine-tunes and MIM-Refiner builds its k-NN bank, linear probe and few-shot pools on all of ImageNet's 1.28M
train images; prepare's arrays hold a `data.train_limit` subset (19 GB of uint8 at 128,000 x 224 px), which the
full split would multiply by ten. Here the images are those of root/train less prepare's validation hold-out, each
decoded by prepare's own decoder (shorter side resized to data.resize, centre crop data.image_size: MIM-Refiner's
Resize 256, CenterCrop 224), so the prepared train subset is these rows at its indices, byte for byte. A batch is
decoded when it is asked for, by a pool of threads (PIL releases the GIL while it decodes and resizes); only the
pooled features of the whole split are kept.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from pipeline.data.loader import ImageSplit
from pipeline.data.sources import FolderImages
from pipeline.data.splits import fewshot_split
from pipeline.data.stream import open_train_folder, stream_indices
from pipeline.errors import DataError


class FolderSplit(ImageSplit):
    """Image files as a split: rows(idx) decodes the files at `idx` with `workers` threads.

    Args:
        files: [N] image paths; y: [N] labels.
        size, resize: the centre crop's side and the shorter side it is cut from (FolderImages.decode).
        mean, std, device: as ImageSplit.
        workers: decoding threads.
    """

    def __init__(self, files: list[Path], y: np.ndarray, size: int, resize: int | None, mean: list[float],
                 std: list[float], device: torch.device, workers: int):
        super().__init__(y, mean, std, device)
        self.files, self.size = FolderImages(files, size, resize), size
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="decode")

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        paths = [self.files.files[i] for i in idx.tolist()]
        decoded = np.stack(list(self.pool.map(self.files.decode, paths)))  # [B, H, W, C], in the order asked
        return torch.from_numpy(decoded.transpose(0, 3, 1, 2)).contiguous().to(self.device)


def full_train_split(root: str | None, card: dict, resize: int | None, prepared_fewshot: dict[int, dict],
                     device: torch.device, workers: int) -> tuple[FolderSplit, dict[int, dict[int, np.ndarray]]]:
    """root/train less prepare's hold-out (checked against the card), and few-shot pools drawn from it as prepare
    draws them from its arrays (`fewshot_split` with the same shots and seeds, over the full split's labels).

    Args:
        root: data.root; card: the prepared card (classes, hold-out hash, split seed, shape, mean/std).
        resize: data.resize.
        prepared_fewshot: prepare's few-shot splits (shots -> seed -> indices), whose shots and seeds are drawn.
        device, workers: where batches go, and the decoding threads (data.workers).
    Returns:
        (the split, shots -> seed -> indices into it).
    Raises:
        DataError: the folder differs from the card's (classes or hold-out), the card predates its split seed,
            or a class has too few images.
    """
    if "split_seed" not in card:
        raise DataError("evaluate.train_split=full: the prepared card does not record its split seed (written by an "
                        "older prepare); rerun the prepare stage")
    folder = open_train_folder(root, card["classes"])
    keep = stream_indices(folder, card["counts"]["val"], card["split_seed"], card)
    labels = np.asarray(folder.targets, np.int64)[keep]
    files = [Path(folder.samples[i][0]) for i in keep]
    split = FolderSplit(files, labels, card["shape"][0], resize, card["mean"], card["std"], device, workers)
    pools = {shots: {s: fewshot_split(labels, shots, s) for s in seeds} for shots, seeds in prepared_fewshot.items()}
    return split, pools
