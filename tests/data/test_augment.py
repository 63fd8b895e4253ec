"""Batched augmentation on tensors: RandomResizedCrop and BYOL's photometric operations, alone and in the views."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.data.augment import (BYOL_VIEWS, blur_kernel_size, photometric, random_crop_reflect, random_resized_crop,
                                   src_padding)
from pipeline.data.loader import DeviceImages
from pipeline.data.views import device_views


def test_random_resized_crop__full_scale_square_no_flip_is_identity():
    x = torch.randn(3, 1, 8, 8)
    out = random_resized_crop(x, (1.0, 1.0), ratio=(1.0, 1.0), hflip=False)
    torch.testing.assert_close(out, x)


def test_random_crop_reflect__each_crop_is_a_shift_of_the_reflect_padded_image():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    out = random_crop_reflect(images, 2, hflip=False, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="reflect")
    assert out.shape == images.shape
    for b in range(2):  # exactly one of the 25 windows of the padded image, the same for every pixel
        windows = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(out[b], padded[b, :, dy:dy + 6, dx:dx + 6])]
        assert len(windows) == 1
    draws = {tuple(random_crop_reflect(images, 2, hflip=False,
                                       generator=torch.Generator().manual_seed(s))[0, 0, 0, :2].tolist())
             for s in range(60)}
    assert len(draws) > 10  # the offsets vary over the whole range, not a fixed shift
    assert src_padding(224) == 4 and src_padding(28) == 1 and src_padding(448) == 8


def test_random_crop_reflect__flips_half_the_images():
    images = torch.rand(400, 1, 4, 4)
    out = random_crop_reflect(images, 1, hflip=True, generator=torch.Generator().manual_seed(1))
    unflipped = random_crop_reflect(images, 1, hflip=False, generator=torch.Generator().manual_seed(1))
    flipped = sum(torch.equal(o, u.flip(-1)) and not torch.equal(o, u) for o, u in zip(out, unflipped))
    assert 160 < flipped < 240


def test_random_resized_crop__same_generator_seed_same_crops():
    x = torch.randn(4, 3, 16, 16)
    a = random_resized_crop(x, (0.2, 1.0), generator=torch.Generator().manual_seed(3))
    b = random_resized_crop(x, (0.2, 1.0), generator=torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)


def test_random_resized_crop__size_sets_the_output_side():
    x = torch.rand(4, 3, 16, 16)
    out = random_resized_crop(x, (0.05, 0.25), size=8, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 8, 8) and torch.isfinite(out).all()


MEAN3, STD3 = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
NO_OPS = {"jitter_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0, "gray_p": 0.0}


def _normalized(n: int, c: int, side: int, seed: int = 0, dtype=torch.float32):
    """Random pixels in 0..1, normalized with the statistics used throughout these tests; (images, mean, std)."""
    mean, std = ([0.5], [0.25]) if c == 1 else (MEAN3, STD3)
    pixels = torch.rand(n, c, side, side, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    m, s = torch.tensor(mean, dtype=dtype).view(1, -1, 1, 1), torch.tensor(std, dtype=dtype).view(1, -1, 1, 1)
    return (pixels - m) / s, mean, std


@pytest.mark.parametrize("op, p, channels", [
    ("jitter_p", 0.8, 1), ("blur_p", 1.0, 1), ("blur_p", 0.1, 1), ("blur_p", 0.5, 1), ("solarize_p", 0.2, 1),
    ("gray_p", 0.2, 3), ("jitter_p", 0.0, 3), ("blur_p", 0.0, 1), ("solarize_p", 0.0, 1), ("gray_p", 0.0, 3),
    ("gray_p", 1.0, 1),
])
def test_photometric__each_operation_fires_at_its_probability(op, p, channels):
    """On 4,000 images the changed fraction is within 4 binomial sigmas of p (exact for 0 and 1; grayscale of one
    channel never changes)."""
    n = 4000
    x, mean, std = _normalized(n, channels, 8)
    # sigma >= 1 so that every blur is visible (at sigma 0.1 the 3-tap kernel is the identity in float32)
    out = photometric(x, mean, std, **{**NO_OPS, op: p}, sigma=(1.0, 2.0), generator=torch.Generator().manual_seed(1))
    changed = ((out - x).abs().amax((1, 2, 3)) > 1e-4).double().mean().item()
    expected = 0.0 if op == "gray_p" and channels == 1 else p
    assert abs(changed - expected) <= 4 * math.sqrt(expected * (1 - expected) / n), (changed, expected)


@pytest.mark.parametrize("channels, side, dtype", [(1, 8, torch.float32), (3, 32, torch.float32),
                                                   (3, 32, torch.float64), (1, 3, torch.float32)])
def test_photometric__outputs_are_normalized_pixels_of_the_input_shape_and_dtype(channels, side, dtype):
    """With every operation on, denormalized outputs lie in 0..1 (1e-5), with the input's shape and dtype."""
    x, mean, std = _normalized(64, channels, side, dtype=dtype)
    out = photometric(x, mean, std, 1.0, 1.0, 1.0, gray_p=0.5, generator=torch.Generator().manual_seed(0))
    pixels = out * torch.tensor(std, dtype=dtype).view(1, -1, 1, 1) + torch.tensor(mean, dtype=dtype).view(1, -1, 1, 1)
    assert out.shape == x.shape and out.dtype == dtype and torch.isfinite(out).all()
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_photometric__same_seed_same_output_other_seed_differs():
    """The draws come from the generator alone: one seed reproduces bit for bit, another changes the images."""
    x, mean, std = _normalized(32, 3, 32)
    view = BYOL_VIEWS["global1"]

    def run(seed):
        return photometric(x, mean, std, view.jitter_p, view.blur_p, view.solarize_p, view.gray_p,
                           generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(5), run(5)) and not torch.equal(run(5), run(6))


def test_photometric__solarization_inverts_pixels_from_one_half():
    """Solarization alone maps pixels >= 0.5 to 1 - pixel and keeps the others (in 0..1 space)."""
    pixels = torch.tensor([0.1, 0.49, 0.5, 0.9]).view(1, 1, 2, 2)
    out = photometric((pixels - 0.5) / 0.25, [0.5], [0.25], **{**NO_OPS, "solarize_p": 1.0}) * 0.25 + 0.5
    torch.testing.assert_close(out.flatten(), torch.tensor([0.1, 0.49, 0.5, 0.1]))


def test_blur_kernel_size__odd_about_a_tenth_of_the_side_at_least_three():
    """23 taps at 224 px as BYOL, and still 3 for 8 px digits."""
    assert [blur_kernel_size(s) for s in (224, 96, 32, 28, 8, 2)] == [23, 11, 5, 3, 3, 3]


def test_byol_views__probabilities_match_the_reference_recipe():
    """Global 0: blur 1, no solarization; global 1: blur 0.1, solarization 0.2; locals: blur 0.5; all jitter 0.8,
    grayscale 0.2."""
    table = {k: (v.blur_p, v.solarize_p, v.jitter_p, v.gray_p) for k, v in BYOL_VIEWS.items()}
    assert table == {"global0": (1.0, 0.0, 0.8, 0.2), "global1": (0.1, 0.2, 0.8, 0.2), "local": (0.5, 0.0, 0.8, 0.2)}


def _device_images(n: int = 512, side: int = 16) -> DeviceImages:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, side, side, 1, generator=g) * 255).to(torch.uint8).numpy()
    return DeviceImages(x, np.zeros(n, dtype=np.int64), [0.5], [0.25], torch.device("cpu"))


def _roughness(view: torch.Tensor) -> float:
    """Mean absolute difference of horizontally neighbouring pixels (blur lowers it, solarization raises it)."""
    return (view[..., 1:] - view[..., :-1]).abs().mean().item()


def test_device_views__global_views_get_their_own_photometric_recipe():
    """On noise images, always-blurred global view 0 is much smoother than rarely blurred, solarized view 1; without
    the photometric operations the two are alike."""
    data, idx = _device_images(), torch.arange(512)
    torch.manual_seed(0)
    on = device_views(data, 1.0, 0, (0.05, 0.25))(idx)[0]
    torch.manual_seed(0)
    off = device_views(data, 1.0, 0, (0.05, 0.25), photometric=False)(idx)[0]
    assert _roughness(on[0]) < 0.8 * _roughness(on[1])
    assert abs(_roughness(off[0]) / _roughness(off[1]) - 1) < 0.05


def test_device_views__switched_off_photometric_keeps_the_crops_of_a_seed():
    """photometric=False gives the plain crops; on, the same seed's views differ only by the photometric draws."""
    data, idx = _device_images(64, 8), torch.arange(64)
    torch.manual_seed(3)
    off = device_views(data, 0.25, 2, (0.05, 0.25), 4, photometric=False)(idx)[0]
    torch.manual_seed(3)
    x = data.batch(idx)
    crops = [random_resized_crop(x, (0.25, 1.0)) for _ in range(2)]
    crops += [random_resized_crop(x, (0.05, 0.25), size=4) for _ in range(2)]
    torch.manual_seed(3)
    on = device_views(data, 0.25, 2, (0.05, 0.25), 4)(idx)[0]
    assert all(torch.equal(a, b) for a, b in zip(off, crops))
    assert [v.shape for v in on] == [v.shape for v in off] and not any(torch.equal(a, b) for a, b in zip(on, off))
