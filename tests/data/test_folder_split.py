"""evaluate.train_split=full: the whole root/train less the hold-out, decoded batch by batch, is prepare's train
split where prepare kept every image, and its few-shot pools are drawn as prepare draws them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.folder_split import full_train_split
from pipeline.data.loader import DeviceImages
from pipeline.data.prepared import make_card
from pipeline.data.sources import load_imagefolder
from pipeline.data.splits import fewshot_split, holdout_split, stratified_subset
from pipeline.errors import DataError
from tests.data.test_stream import write_jpeg_folder

CPU = torch.device("cpu")


def prepare_like(root: Path, train_limit: int, seed: int = 3) -> tuple[dict, np.ndarray, np.ndarray]:
    """What the prepare stage writes for a folder at 16 px from resize 20: (card, train subset positions within the
    non-held-out images, the train arrays)."""
    src = load_imagefolder(str(root), 16, resize=20)
    keep, val = holdout_split(src.y_train, 3, seed)
    sub = stratified_subset(src.y_train[keep], train_limit, seed + 1)
    x = {"train": src.x_train[keep[sub]], "val": src.x_train[val], "test": src.x_test[:]}
    y = {"train": src.y_train[keep[sub]], "val": src.y_train[val], "test": src.y_test}
    return make_card(x, y, src.classes, src.origin, seed), sub, x["train"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_jpeg_folder(tmp_path_factory.mktemp("full"), train_per_class=5, val_per_class=1)


def test_full_train_split__holds_the_prepared_subset_byte_for_byte_and_normalizes_alike(root):
    card, sub, arrays = prepare_like(root, train_limit=6)
    split, _ = full_train_split(str(root), card, 20, {1: {0: None}}, CPU, workers=3)
    assert len(split) == 12 and split.size == 16  # 15 train images less the 3 held out; prepare kept 6 of them
    rows = split.rows(torch.from_numpy(sub))
    assert torch.equal(rows, torch.from_numpy(arrays.transpose(0, 3, 1, 2)))
    prepared = DeviceImages(arrays, np.zeros(6, np.int64), card["mean"], card["std"], CPU)
    assert torch.equal(split.batch(torch.from_numpy(sub)), prepared.batch(torch.arange(6)))
    (first, labels), = list(split.batches(12, 0, 2))  # in order, labels alongside
    assert first.shape == (2, 3, 16, 16) and labels.tolist() == split.labels[:2].tolist()


def test_full_train_split__few_shot_pools_are_prepares_draws_over_the_full_labels(root):
    card, _, _ = prepare_like(root, train_limit=6)
    split, pools = full_train_split(str(root), card, 20, {1: {0: None, 1: None}, 2: {0: None}}, CPU, workers=1)
    labels = split.labels.numpy()
    assert set(pools) == {1, 2} and set(pools[1]) == {0, 1}
    for shots, by_seed in pools.items():
        for seed, idx in by_seed.items():
            assert idx.tolist() == fewshot_split(labels, shots, seed).tolist()
            assert np.bincount(labels[idx]).tolist() == [shots] * 3


def test_full_train_split__a_card_of_another_folder_or_without_its_split_seed_is_refused(root):
    card, _, _ = prepare_like(root, train_limit=6)
    with pytest.raises(DataError, match="differ from the classes of the prepared card"):
        full_train_split(str(root), {**card, "classes": ["ant", "bee"]}, 20, {}, CPU, workers=1)
    with pytest.raises(DataError, match="no longer matches the prepared card"):  # a hold-out of other labels
        full_train_split(str(root), {**card, "counts": {**card["counts"], "val": 6}}, 20, {}, CPU, workers=1)
    old = {k: v for k, v in card.items() if k != "split_seed"}
    with pytest.raises(DataError, match="does not record its split seed.*rerun the prepare stage"):
        full_train_split(str(root), old, 20, {}, CPU, workers=1)


def test_validate__the_full_train_split_needs_an_imagefolder_and_a_root():
    from pipeline import config
    from pipeline.errors import ConfigError
    from tests.conftest import tiny_params

    params = tiny_params()
    params["evaluate"].update(train_split="full")
    with pytest.raises(ConfigError, match="evaluate.train_split=full reads an ImageFolder's whole root/train; it "
                                          "needs data.dataset=imagefolder and data.root \\(got 'digits', root None"):
        config.validate(params)
    params["data"].update(dataset="imagefolder", root="/data/imagenet", image_size=8)
    config.validate(params)
