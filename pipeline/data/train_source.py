"""Where a training stage's batches come from: the prepared arrays on the device, or (data.stream) the
ImageFolder tree through DataLoader workers. One helper for pretraining and refinement."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import torch

from pipeline.data.loader import DeviceImages, epoch_order
from pipeline.data.prepared import Prepared, load_prepared
from pipeline.data.stream import device_batches, open_stream, read_card, stream_loader

log = logging.getLogger(__name__)


class TrainData(NamedTuple):
    """The card, the image count, the train arrays on the device (None when streaming: batches then carry the
    images), epoch -> batches, and what identifies the data in the resume fingerprint."""

    card: dict
    size: int
    arrays: DeviceImages | None
    batches: Callable[[int], Iterable]
    tag: object


def train_source(data_cfg: dict, data_dir: str | Path, seed: int, batch_size: int, device: torch.device,
                 stream_transform: Callable[[dict], Callable], prepared: Prepared | None = None) -> TrainData:
    """The train split of the prepared dataset, or with data.stream the root/train folder less prepare's val
    hold-out, each image transformed by `stream_transform(card)` in the workers.

    Batches are epoch_order's indices [B] on the array path and (images or views, labels, indices) on the stream.
    """
    if data_cfg["stream"]:
        card = read_card(data_dir)  # the arrays are not needed here, and at ImageNet scale they are large
        images, digest = open_stream(data_cfg["root"], card, data_cfg["val_size"], seed, stream_transform(card))
        loader = stream_loader(images, batch_size, data_cfg["workers"], seed, device)
        log.info("streaming %d images of %s through %d workers", len(images), images.folder.root,
                 data_cfg["workers"])
        return TrainData(card, len(images), None, lambda e: device_batches(loader, e, device),
                         [card["sha256"], digest])
    data = prepared or load_prepared(data_dir)
    train = DeviceImages(data.x["train"], data.y["train"], data.card["mean"], data.card["std"], device)
    return TrainData(data.card, len(train), train, lambda e: epoch_order(len(train), batch_size, seed, e, device),
                     data.card["sha256"])
