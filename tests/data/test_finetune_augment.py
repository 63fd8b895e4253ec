"""Fine-tuning's augmentations (MAE's recipe): random erasing on the device, RandAugment through timm on the host."""
from __future__ import annotations

import random

import numpy as np
import torch

from pipeline.data.augment import rand_augment_batch, rand_augment_fn, random_erase
from pipeline.data.loader import DeviceImages


def _images(n=6, side=16, channels=3):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, side, side, channels), dtype=np.uint8)
    return DeviceImages(x, np.arange(n) % 3, [0.5] * channels, [0.25] * channels, torch.device("cpu"))


def test_random_erase__off_is_identity_and_on_fills_one_box_per_image():
    torch.manual_seed(0)
    images = torch.randn(8, 3, 16, 16)
    assert torch.equal(random_erase(images, 0.0), images)
    erased = random_erase(images, 1.0)
    for before, after in zip(images, erased):
        changed = (before != after).any(0)
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        box = changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all() and changed.sum() == box.numel()  # one filled rectangle, nothing else touched
        assert 0.02 * 256 * 0.5 <= box.numel() <= 256 / 3 * 1.5  # area fraction in [0.02, 1/3], up to rounding


def test_rand_augment_batch__reproducible_from_torch_and_leaves_global_generators_alone():
    data = _images()
    imgs = data.batch(torch.arange(6))
    transform = rand_augment_fn("rand-m9-mstd0.5-inc1", 16, [0.5, 0.5, 0.5])
    random.seed(123)
    np.random.seed(123)
    py_state, np_state = random.getstate(), np.random.get_state()
    torch.manual_seed(0)
    a = rand_augment_batch(imgs, data, transform)
    torch.manual_seed(0)
    b = rand_augment_batch(imgs, data, transform)
    assert torch.equal(a, b) and a.shape == imgs.shape and not torch.equal(a, imgs)
    assert random.getstate() == py_state and np.random.get_state()[1].tolist() == np_state[1].tolist()
    torch.testing.assert_close(rand_augment_batch(imgs, data, lambda img: img), imgs)  # identity: a round trip
    gray = _images(channels=1)
    assert rand_augment_batch(gray.batch(torch.arange(6)), gray, transform).shape == (6, 1, 16, 16)
