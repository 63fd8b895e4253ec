"""Batched RandomResizedCrop on tensors."""
from __future__ import annotations

import torch

from pipeline.data.augment import random_resized_crop


def test_random_resized_crop__full_scale_square_no_flip_is_identity():
    x = torch.randn(3, 1, 8, 8)
    out = random_resized_crop(x, (1.0, 1.0), ratio=(1.0, 1.0), hflip=False)
    torch.testing.assert_close(out, x)


def test_random_resized_crop__same_generator_seed_same_crops():
    x = torch.randn(4, 3, 16, 16)
    a = random_resized_crop(x, (0.2, 1.0), generator=torch.Generator().manual_seed(3))
    b = random_resized_crop(x, (0.2, 1.0), generator=torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)


def test_random_resized_crop__size_sets_the_output_side():
    x = torch.rand(4, 3, 16, 16)
    out = random_resized_crop(x, (0.05, 0.25), size=8, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 8, 8) and torch.isfinite(out).all()
