"""The streaming ImageFolder path: shapes, (seed, epoch) reproducibility, rank sharding, views, one-line errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import config, distributed
from pipeline.data.loader import epoch_order
from pipeline.data.prepared import array_hash
from pipeline.data.splits import holdout_split
from pipeline.data.stream import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EpochBatchSampler,
    SeededImages,
    device_batches,
    listing_digest,
    mae_transform,
    multiview_transform,
    open_stream,
    open_train_folder,
    stream_loader,
)
from pipeline.errors import ConfigError, DataError
from tests.conftest import tiny_params

CLASSES = ("ant", "bee", "cat")
CPU = torch.device("cpu")


def write_jpeg_folder(root: Path, train_per_class: int = 6, val_per_class: int = 2, size: tuple[int, int] = (48, 40)
                      ) -> Path:
    """An ImageNet-layout tree root/{train,val}/<class>/<n>.jpg of random-content JPEG files (width x height)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i:03d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory) -> Path:
    return write_jpeg_folder(tmp_path_factory.mktemp("jpegs"))


def mae_images(root: Path, size: int = 32, seed: int = 0) -> SeededImages:
    folder = open_train_folder(str(root))
    return SeededImages(folder, np.arange(len(folder)), mae_transform(size, 0.2, True, IMAGENET_MEAN, IMAGENET_STD),
                        seed)


def epoch_batches(images: SeededImages, epoch: int, batch_size: int = 6, workers: int = 0) -> list:
    loader = stream_loader(images, batch_size, workers, 0, CPU)
    return list(device_batches(loader, epoch, CPU))


def test_stream_loader__yields_normalized_float_images_and_labels(folder_root):
    batches = epoch_batches(mae_images(folder_root), 0, batch_size=4)
    assert len(batches) == 18 // 4  # the ragged tail is dropped
    images, labels, idx = batches[0]
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert idx.tolist() == epoch_order(18, 4, 0, 0, CPU)[0].tolist()  # dataset indices, for the NN queues
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1, 2}
    assert images.min() < -1 and images.max() > 1  # normalized, not 0..1


def test_stream_loader__same_seed_and_epoch_repeat_exactly_and_epochs_differ(folder_root):
    first, again = epoch_batches(mae_images(folder_root), 0), epoch_batches(mae_images(folder_root), 0)
    for (x1, y1, _), (x2, y2, _) in zip(first, again):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    next_epoch = epoch_batches(mae_images(folder_root), 1)
    assert not torch.equal(first[0][0], next_epoch[0][0])
    assert [y.tolist() for _, y, _ in first] != [y.tolist() for _, y, _ in next_epoch]
    other_seed = epoch_batches(mae_images(folder_root, seed=1), 0)
    assert not torch.equal(first[0][0], other_seed[0][0])


def test_stream_loader__worker_processes_give_the_batches_of_the_main_process(folder_root):
    inline, workers = epoch_batches(mae_images(folder_root), 2), epoch_batches(mae_images(folder_root), 2, workers=2)
    for (x1, y1, _), (x2, y2, _) in zip(inline, workers, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_loader__leaves_the_callers_random_state_alone(folder_root, workers):
    """The loop's masks draw from the global RNG: loading must not move it, with or without workers."""
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    epoch_batches(mae_images(folder_root), 0, workers=workers)
    assert torch.equal(torch.rand(3), expected)


def test_epoch_batch_sampler__two_ranks_see_disjoint_halves_of_each_global_batch(monkeypatch):
    single = list(EpochBatchSampler(40, 8, seed=3).__iter__())
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "_WORLD", distributed.World(rank, 2))
        sampler = EpochBatchSampler(40, 8, seed=3)
        sampler.set_epoch(0)
        shares.append(list(sampler))
    assert len(shares[0]) == len(shares[1]) == len(single) == 5
    for whole, r0, r1 in zip(single, *shares):
        assert len(r0) == len(r1) == 4 and not set(r0) & set(r1)
        assert r0 + r1 == whole  # rank r takes the r-th contiguous slice, as the array path does
    assert {i for batch in single for _, i in batch} <= set(range(40))


def test_multiview_transform__two_global_views_and_n_local_crops(folder_root):
    transform = multiview_transform(32, 16, 3, 0.25, (0.05, 0.25), IMAGENET_MEAN, IMAGENET_STD)
    folder = open_train_folder(str(folder_root))
    views, labels, _ = epoch_batches(SeededImages(folder, np.arange(len(folder)), transform, 0), 0)[0]
    assert [tuple(v.shape) for v in views] == [(6, 3, 32, 32)] * 2 + [(6, 3, 16, 16)] * 3
    assert labels.shape == (6,)
    assert not torch.equal(views[0], views[1])
    again = epoch_batches(SeededImages(folder, np.arange(len(folder)), transform, 0), 0)[0][0]
    assert all(torch.equal(a, b) for a, b in zip(views, again))


def test_open_stream__leaves_out_the_validation_hold_out_prepare_drew(folder_root):
    folder = open_train_folder(str(folder_root))
    labels = np.asarray(folder.targets)
    keep, val = holdout_split(labels, 3, 0)
    card = {"classes": list(CLASSES), "sha256": {"y_val": array_hash(labels[val])}}
    images, digest = open_stream(str(folder_root), card, 3, 0, mae_transform(16, 0.2, True, IMAGENET_MEAN,
                                                                              IMAGENET_STD))
    assert len(images) == 15 and images.keep.tolist() == keep.tolist() and digest == listing_digest(folder)
    with pytest.raises(DataError, match="no longer matches the prepared card"):
        open_stream(str(folder_root), card, 6, 0, images.transform)
    with pytest.raises(DataError, match=r"class folders of .*train \(3\) differ from the classes of the prepared "
                                        r"card \(2\)"):
        open_stream(str(folder_root), {**card, "classes": ["ant", "bee"]}, 3, 0, images.transform)


def test_open_stream__a_model_at_another_seed_holds_out_the_images_prepare_held_out(folder_root):
    """The hold-out is drawn with the card's split seed (prepare's), not the model's: seeds 0 and 1 of params
    `seeds` stream the same images."""
    folder = open_train_folder(str(folder_root))
    labels = np.asarray(folder.targets)
    keep, val = holdout_split(labels, 3, 7)
    card = {"classes": list(CLASSES), "sha256": {"y_val": array_hash(labels[val])}, "split_seed": 7}
    for model_seed in (0, 1):
        images, _ = open_stream(str(folder_root), card, 3, model_seed, mae_transform(16, 0.2, True, IMAGENET_MEAN,
                                                                                    IMAGENET_STD))
        assert images.keep.tolist() == keep.tolist() and images.seed == model_seed
    assert keep.tolist() != holdout_split(labels, 3, 0)[0].tolist()  # the model seed's own draw would differ


def test_listing_digest__changes_when_a_file_is_added(tmp_path):
    root = write_jpeg_folder(tmp_path / "tree", train_per_class=2, val_per_class=1)
    before = listing_digest(open_train_folder(str(root)))
    (root / "train" / "ant" / "002.jpg").write_bytes((root / "train" / "ant" / "000.jpg").read_bytes())
    assert listing_digest(open_train_folder(str(root))) != before


def test_open_train_folder__missing_root_train_and_empty_class(tmp_path):
    with pytest.raises(DataError, match="set data.root"):
        open_train_folder(None)
    with pytest.raises(DataError, match=f"missing folder {tmp_path / 'nowhere' / 'train'}"):
        open_train_folder(str(tmp_path / "nowhere"))
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="has no class folders"):
        open_train_folder(str(tmp_path))
    write_jpeg_folder(tmp_path, train_per_class=1, val_per_class=1)
    (tmp_path / "train" / "dog").mkdir()
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=f"class folder {tmp_path / 'train' / 'dog'} holds no images"):
        open_train_folder(str(tmp_path))


@pytest.mark.parametrize("workers", [0, 1])
def test_device_batches__an_undecodable_file_is_one_line(tmp_path, workers):
    root = write_jpeg_folder(tmp_path, train_per_class=2, val_per_class=1)
    bad = root / "train" / "bee" / "000.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as err:
        epoch_batches(mae_images(root, size=16), 0, batch_size=6, workers=workers)
    assert str(err.value) == f"imagefolder: cannot decode {bad} (UnidentifiedImageError)"


def test_validate__stream_needs_an_imagefolder_and_a_root():
    params = tiny_params()
    params["data"].update(stream=True)
    with pytest.raises(ConfigError, match="data.stream=true streams an ImageFolder tree; it needs "
                                          "data.dataset=imagefolder \\(got 'digits'\\)"):
        config.validate(params)
    params["data"].update(dataset="imagefolder", root=None)
    with pytest.raises(ConfigError, match="data.stream=true needs data.root"):
        config.validate(params)
    params["data"].update(root="/data/imagenet")
    config.validate(params)
    params["data"].update(workers=-1)
    with pytest.raises(ConfigError, match="data.workers = -1"):
        config.validate(params)
