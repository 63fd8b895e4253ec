"""Pooled features: the normed pools as before, and the last block's CLS before the final norm (MIM-Refiner's)."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.data.loader import DeviceImages
from pipeline.eval.features import pooled_features
from pipeline.models.vit import PRENORM, ViTEncoder


def _data(n: int = 10) -> DeviceImages:
    rng = np.random.default_rng(0)
    return DeviceImages(rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), np.arange(n) % 3, [0.5], [0.25],
                        torch.device("cpu"))


def test_pooled_features__prenorm_is_the_raw_cls_and_leaves_the_normed_pools_as_they_were():
    torch.manual_seed(0)
    encoder = ViTEncoder(8, 2, 1, 16, 2, 2)
    with torch.no_grad():  # a norm that visibly moves the features
        encoder.norm.weight.mul_(3.0)
        encoder.norm.bias.add_(1.0)
    data = _data()
    plain, both = pooled_features(encoder, data, 4), pooled_features(encoder, data, 4, prenorm=True)
    assert set(plain) == {"cls", "mean_patch"} and set(both) == {"cls", "mean_patch", PRENORM}
    assert all(torch.equal(plain[p], both[p]) for p in plain)
    images = data.batch(slice(None))
    with torch.no_grad():
        raw = encoder.forward_features(images, norm=False)[:, 0]
        torch.testing.assert_close(both[PRENORM], raw)
        torch.testing.assert_close(encoder.feature(images, PRENORM), raw)
        torch.testing.assert_close(encoder.norm(raw), both["cls"])  # the final norm is all that separates them
        assert not torch.allclose(both[PRENORM], both["cls"])


def test_feature__a_cut_encoder_has_no_final_norm_so_both_features_agree():
    torch.manual_seed(0)
    encoder = ViTEncoder(8, 2, 1, 16, 3, 2)
    encoder.truncate(2)
    images = _data().batch(slice(None))
    with torch.no_grad():
        torch.testing.assert_close(encoder.feature(images, PRENORM), encoder.feature(images, "cls"))
