"""MAE's fine-tuning recipe options: random erasing, RandAugment through timm, learnable position embeddings."""
from __future__ import annotations

import random

import numpy as np
import torch

from pipeline.data.loader import DeviceImages
from pipeline.models.pos_embed import sincos_2d
from pipeline.models.vit import ViTEncoder
from pipeline.train.finetune import (Classifier, finetune_step_fn, layer_of, rand_augment_batch, rand_augment_fn,
                                     random_erase)


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


def test_classifier__learnable_pos_embed_starts_at_sincos_and_trains_with_the_embeddings():
    encoder = ViTEncoder(8, 2, 1, 32, 2, 2)
    model = Classifier(encoder, 4, learnable_pos_embed=True)
    assert isinstance(encoder.pos_embed, torch.nn.Parameter)
    torch.testing.assert_close(encoder.pos_embed.data, sincos_2d(32, 4, 4, cls_token=True))
    assert "encoder.pos_embed" in dict(model.named_parameters()) and layer_of(2)("encoder.pos_embed") == 0
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    assert encoder.pos_embed.grad is not None and encoder.pos_embed.grad.abs().sum() > 0
    fixed = Classifier(ViTEncoder(8, 2, 1, 32, 2, 2), 4)
    assert "encoder.pos_embed" not in dict(fixed.named_parameters())
    assert set(fixed.state_dict()) == set(model.state_dict())  # checkpoints keep their keys


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


def test_finetune_step_fn__the_full_recipe_gives_a_finite_loss():
    data = _images()
    model = Classifier(ViTEncoder(16, 4, 3, 32, 2, 2), 3, learnable_pos_embed=True)
    step = finetune_step_fn(model, data, 3, 0.08, 0.8, 1.0, 0.1, reprob=0.25,
                            rand_augment=rand_augment_fn("rand-m9-mstd0.5-inc1", 16, [0.5] * 3))
    torch.manual_seed(0)
    loss, _ = step(torch.arange(6))
    assert torch.isfinite(loss) and loss.item() > 0
