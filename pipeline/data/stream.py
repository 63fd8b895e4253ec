"""Streaming an ImageFolder tree through DataLoader workers: the path for data too large to hold as arrays.

Small datasets live on the device as uint8 arrays (pipeline/data/loader.py). ImageNet at 224 px does not fit, so
pretraining with `data.stream` decodes JPEGs and draws its augmentations on the CPU, in worker processes, and
copies pinned batches to the device. Two things keep the pipeline's reproducibility:
- the batches of an epoch are `epoch_order(seed, epoch)`, the same order and per-rank slices as the array path;
- every sample's random numbers come from a generator seeded by (seed, epoch, index) alone, so the augmentations
  do not depend on the number of workers, on which worker decodes a sample, or on the number of processes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from pipeline.data.augment import BYOL_VIEWS, src_padding
from pipeline.data.loader import epoch_order
from pipeline.data.prepared import array_hash
from pipeline.data.sources import IMAGE_SUFFIXES
from pipeline.data.splits import holdout_split
from pipeline.errors import DataError

# the usual ImageNet statistics (0..1 scale), for a folder that has no prepared card (the benchmark)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_BICUBIC = T.InterpolationMode.BICUBIC


def mae_transform(size: int, crop_scale_min: float, hflip: bool, mean: list[float] | tuple[float, ...],
                  std: list[float] | tuple[float, ...], augment: str = "rrc") -> T.Compose:
    """The pretraining augmentation: MAE's (facebookresearch/mae main_pretrain.py; augment "rrc")
    RandomResizedCrop(size, scale=(min, 1), bicubic), or the simple resized crop of PixMIM and mmpretrain's MFF
    configs ("src": Resize(size), RandomCrop(size) with reflect padding, augment.src_padding), then a horizontal
    flip, ToTensor, Normalize.

    Returns:
        PIL image -> float tensor [3, size, size].
    """
    steps: list[Callable] = (
        [T.Resize(size), T.RandomCrop(size, padding=src_padding(size), padding_mode="reflect")] if augment == "src"
        else [T.RandomResizedCrop(size, scale=(crop_scale_min, 1.0), interpolation=_BICUBIC)])
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def _byol_view(size: int, scale: tuple[float, float], blur_p: float, solarize_p: float,
               mean: list[float] | tuple[float, ...], std: list[float] | tuple[float, ...]) -> T.Compose:
    # the reference gives the blur's sigma only; the kernel spans about a tenth of the side (BYOL: 23 px at 224)
    kernel = 2 * round(0.05 * size) + 1
    return T.Compose([
        T.RandomResizedCrop(size, scale=scale, interpolation=_BICUBIC),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur_p),
        T.RandomSolarize(128, p=solarize_p),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


class MultiView:
    """Applies each view's transform to one image and returns the list of views (a class, so workers can pickle
    it under any start method)."""

    def __init__(self, views: list[Callable]):
        self.views = views

    def __call__(self, image: Any) -> list[torch.Tensor]:
        return [view(image) for view in self.views]


def multiview_transform(size: int, local_size: int, local_crops: int, global_scale_min: float,
                        local_scale: tuple[float, float], mean: list[float] | tuple[float, ...],
                        std: list[float] | tuple[float, ...]) -> MultiView:
    """MIM-Refiner's views (docs/methods.md, BYOL-style): two global views and `local_crops` local ones.

    Every view: RandomResizedCrop (bicubic), flip, colour jitter 0.4/0.4/0.2/0.1 with p=0.8, grayscale p=0.2.
    Global 1 is always blurred (sigma 0.1-2); global 2 is blurred with p=0.1 and solarized (threshold 128) with
    p=0.2; local crops (scale `local_scale`) are blurred with p=0.5. All views are normalized.

    Args:
        size: side of the global views (224 on ImageNet).
        local_size: side of the local crops (96 for patch 16 on ImageNet).
        local_crops: number of local crops (10 in MIM-Refiner).
        global_scale_min: global crops take scale (min, 1) (0.25 in MIM-Refiner).
        local_scale: (min, max) area fraction of the local crops ((0.05, 0.25)).
        mean, std: per-channel normalization on the 0..1 scale.
    Returns:
        PIL image -> list of 2 + local_crops tensors [3, size, size] then [3, local_size, local_size].
    """
    global_scale = (global_scale_min, 1.0)
    g0, g1, loc = BYOL_VIEWS["global0"], BYOL_VIEWS["global1"], BYOL_VIEWS["local"]  # shared with the array path
    local = _byol_view(local_size, tuple(local_scale), loc.blur_p, loc.solarize_p, mean, std)
    return MultiView([_byol_view(size, global_scale, g0.blur_p, g0.solarize_p, mean, std),
                      _byol_view(size, global_scale, g1.blur_p, g1.solarize_p, mean, std), *[local] * local_crops])


def _is_image(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES  # the suffixes prepare reads, so both list the same files


def open_train_folder(root: str | None, classes: list[str] | None = None) -> ImageFolder:
    """The ImageFolder over `root`/train, in prepare's order (sorted classes, sorted files of flat class
    folders, as ImageNet's), with no transform.

    Args:
        root: data.root, an ImageNet-layout tree root/train/<class>/<image>.
        classes: the class names the prepared card lists; the folder must hold exactly these.
    Raises:
        DataError: no root, no train/ folder, no class folders, an empty class folder, or other classes.
    """
    if not root:
        raise DataError("imagefolder: set data.root to a folder with train/ and val/ class subfolders")
    train = Path(root) / "train"
    if not train.is_dir():
        raise DataError(f"imagefolder: missing folder {train}")
    if not any(d.is_dir() for d in train.iterdir()):
        raise DataError(f"imagefolder: {train} has no class folders")
    folder = ImageFolder(str(train), is_valid_file=_is_image, allow_empty=True)
    counts = np.bincount(folder.targets, minlength=len(folder.classes))
    if (counts == 0).any():
        raise DataError(f"imagefolder: class folder {train / folder.classes[int(np.argmin(counts))]} holds no images")
    if classes is not None and list(folder.classes) != list(classes):
        raise DataError(f"imagefolder: the class folders of {train} ({len(folder.classes)}) differ from the "
                        f"classes of the prepared card ({len(classes)}); rerun prepare")
    return folder


def listing_digest(folder: ImageFolder) -> str:
    """sha256 of the folder's (relative path, label) listing: tags a resumable run with the data it streams."""
    h = hashlib.sha256()
    for path, label in folder.samples:
        h.update(f"{Path(path).relative_to(folder.root)}\t{label}\n".encode())
    return h.hexdigest()


def stream_indices(folder: ImageFolder, val_size: int, seed: int, card: dict) -> np.ndarray:
    """The folder's images that pretraining streams: all but the validation hold-out prepare drew.

    prepare draws the hold-out with `holdout_split(train labels, val_size, seed)` over the same listing, so
    drawing it again here keeps the probe's selection images out of pretraining, as on the array path. The seed is
    the card's split_seed (a model trained at another of params `seeds` shares prepare's splits); `seed` serves
    cards written before they recorded it.

    Raises:
        DataError: the hold-out's labels differ from the card's (the folder changed since prepare).
    """
    labels = np.asarray(folder.targets, np.int64)
    keep, val = holdout_split(labels, val_size, card.get("split_seed", seed))
    if array_hash(labels[val]) != card["sha256"]["y_val"]:
        raise DataError(f"imagefolder: {folder.root} no longer matches the prepared card (its validation "
                        f"hold-out labels differ); rerun prepare")
    return keep


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation, a hash of (seed, epoch, index): no two nearby triples
    give related generator states."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class SeededImages(Dataset):
    """Images of an ImageFolder (a subset `keep`), each transformed with torch random numbers seeded by
    (seed, epoch, index).

    Keys are (epoch, index) pairs, as `EpochBatchSampler` yields them: persistent workers hold their own copy of
    the dataset, so the epoch travels with each key. The caller's torch RNG is left as it was (fork_rng), so with
    no workers the loop's masks draw the same numbers as with workers.

    Args:
        folder: the ImageFolder (its samples and loader are used; its own transform is ignored).
        keep: [N] indices into the folder's samples.
        transform: PIL image -> tensor or list of tensors.
        seed: the run's seed.
    """

    def __init__(self, folder: ImageFolder, keep: np.ndarray, transform: Callable, seed: int):
        self.folder, self.keep, self.transform, self.seed = folder, np.asarray(keep, np.int64), transform, seed

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int, int]:
        epoch, index = key
        path, label = self.folder.samples[self.keep[index]]
        try:
            image = self.folder.loader(path)
        except OSError as err:  # unreadable or not an image: name the file
            raise DataError(f"imagefolder: cannot decode {path} ({type(err).__name__})") from None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self.transform(image), label, index  # the index: NN queues never return a sample's own entry


class EpochBatchSampler(Sampler):
    """This rank's share of every global batch of an epoch, as lists of (epoch, index) keys.

    The order is `epoch_order(n, batch_size, seed, epoch)`: it depends only on (seed, epoch), drops the ragged
    tail (drop_last), and under torchrun gives each rank its contiguous slice of each global batch. Call
    `set_epoch` before iterating.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = epoch_order(self.n, self.batch_size, self.seed, self.epoch, torch.device("cpu"))
        for row in order.tolist():
            yield [(self.epoch, i) for i in row]


def stream_loader(dataset: SeededImages, batch_size: int, workers: int, seed: int, device: torch.device
                  ) -> DataLoader:
    """A DataLoader over `dataset` with `workers` processes (kept across epochs), pinned memory on CUDA and the
    epoch order of `EpochBatchSampler` (`batch_size` is the global batch).

    Returns:
        A loader yielding (images [B, C, H, W] or a list of views, labels [B], indices [B]); see `device_batches`.
    """
    # the loader draws a base seed per iterator (per epoch without workers, once with persistent ones); its own
    # generator keeps those draws off the global RNG that the loop's masks use. Samples are seeded by key anyway.
    return DataLoader(dataset, batch_sampler=EpochBatchSampler(len(dataset), batch_size, seed), num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(seed))


def device_batches(loader: DataLoader, epoch: int, device: torch.device
                   ) -> Iterator[tuple[Any, torch.Tensor, torch.Tensor]]:
    """Yield the batches of `epoch` as (images or a list of views, labels, indices) on `device`, copied without
    blocking the host.

    Raises:
        DataError: a worker could not read an image (its one line, without the worker's traceback).
    """
    loader.batch_sampler.set_epoch(epoch)
    try:
        for images, labels, idx in loader:
            if isinstance(images, list):
                images = [v.to(device, non_blocking=True) for v in images]
            else:
                images = images.to(device, non_blocking=True)
            yield images, labels.to(device, non_blocking=True), idx.to(device, non_blocking=True)
    except DataError as err:  # a worker's error arrives wrapped in its traceback: keep the line it raised
        raise DataError(str(err).strip().splitlines()[-1].removeprefix("pipeline.errors.DataError: ")) from None


def read_card(data_dir: str | Path) -> dict:
    """The card.json of a prepared dataset, without its arrays (at ImageNet scale they are gigabytes that a
    streaming stage does not need).

    Raises:
        DataError: the card is missing or not JSON.
    """
    path = Path(data_dir) / "card.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"prepared dataset incomplete: cannot read {path} ({type(err).__name__}; run the "
                        f"prepare stage)") from None


def open_stream(root: str | None, card: dict, val_size: int, seed: int, transform: Callable
                ) -> tuple[SeededImages, str]:
    """The images pretraining streams: root/train less prepare's validation hold-out, checked against the card.

    Args:
        root: data.root.
        card: the prepared dataset's card (classes and the hold-out's label hash are checked).
        val_size, seed: data.val_size and the seed prepare drew the hold-out with.
        transform: PIL image -> tensor (or list of views).
    Returns:
        The dataset and the digest of the folder's listing (for the resume fingerprint).
    """
    folder = open_train_folder(root, card["classes"])
    return SeededImages(folder, stream_indices(folder, val_size, seed, card), transform, seed), listing_digest(folder)
