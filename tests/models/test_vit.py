"""The encoder contract: intermediates agree with forward_features; positions are fixed sin-cos."""
from __future__ import annotations

import pytest
import torch

from pipeline.models.pos_embed import sincos_2d
from pipeline.models.vit import ViTEncoder, pool_tokens


def tiny_encoder() -> ViTEncoder:
    torch.manual_seed(0)
    return ViTEncoder(img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=3, num_heads=2).eval()


def test_forward_intermediates__last_normed_equals_forward_features():
    enc, x = tiny_encoder(), torch.randn(2, 1, 8, 8)
    last = enc.forward_intermediates(x, [0, 1, 2], norm=True)[-1]
    torch.testing.assert_close(last, enc.forward_features(x))


def test_forward_intermediates__rejects_out_of_range_and_unsorted():
    enc = tiny_encoder()
    with pytest.raises(ValueError, match="within 0..2"):
        enc.forward_intermediates(torch.randn(1, 1, 8, 8), [3], norm=False)
    with pytest.raises(ValueError, match="ascending"):
        enc.forward_intermediates(torch.randn(1, 1, 8, 8), [2, 0], norm=False)


def test_sincos_2d__cls_row_zero_and_first_half_encodes_column():
    pe = sincos_2d(8, 2, 3)[0]
    assert pe.shape == (7, 8) and torch.all(pe[0] == 0)
    # tokens 1 and 4 share column 0 (rows 0 and 1): first half equal, second half differs
    torch.testing.assert_close(pe[1, :4], pe[4, :4])
    assert not torch.allclose(pe[1, 4:], pe[4, 4:])
    torch.testing.assert_close(pe[1], torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]))


def test_pool_tokens__cls_and_mean_patch():
    t = torch.arange(12.0).view(1, 3, 4)
    assert pool_tokens(t, "cls").tolist() == [[0.0, 1.0, 2.0, 3.0]]
    assert pool_tokens(t, "mean_patch").tolist() == [[6.0, 7.0, 8.0, 9.0]]


def test_truncate__keeps_first_blocks():
    enc = tiny_encoder()
    x = torch.randn(1, 1, 8, 8)
    ref = enc.forward_intermediates(x, [1], norm=False)[0]
    enc.truncate(2)
    assert enc.depth == 2 and len(enc.blocks) == 2
    torch.testing.assert_close(enc.forward_intermediates(x, [1], norm=False)[0], ref)


def test_vit__smaller_input_gets_the_sincos_positions_of_its_own_grid():
    from pipeline.models.pos_embed import sincos_2d

    enc = ViTEncoder(16, 4, 1, 32, 2, 2)
    small = torch.randn(3, 1, 8, 8)
    expected = enc.patch_embed(small) + sincos_2d(32, 2, 2, cls_token=False)
    torch.testing.assert_close(enc.embed_patches(small), expected)
    assert enc.forward_features(small).shape == (3, 1 + 4, 32)
    full = torch.randn(2, 1, 16, 16)  # the model's own size still uses its stored table
    torch.testing.assert_close(enc.embed_patches(full), enc.patch_embed(full) + enc.pos_embed[:, 1:])
