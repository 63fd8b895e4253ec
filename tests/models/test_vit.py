"""The encoder contract: intermediates agree with forward_features and with timm's VisionTransformer holding the same
weights; positions are fixed sin-cos."""
from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from pipeline.models.pos_embed import sincos_2d
from pipeline.models.vit import ViTEncoder, pool_tokens
from pipeline.train.checkpoint import load_encoder, save_checkpoint


def tiny_encoder() -> ViTEncoder:
    torch.manual_seed(0)
    return ViTEncoder(img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=3, num_heads=2).eval()


def test_forward_intermediates__last_normed_equals_forward_features():
    enc, x = tiny_encoder(), torch.randn(2, 1, 8, 8)
    final, parts = enc.forward_intermediates(x, [0, 1, 2], return_prefix_tokens=True, norm=True, output_fmt="NLC")
    patches, cls = parts[-1]
    torch.testing.assert_close(torch.cat([cls, patches], dim=1), enc.forward_features(x))
    torch.testing.assert_close(final, enc.forward_features(x))


def test_forward_intermediates__timm_index_conventions():
    """None = all blocks, n = the last n, negative = from the end, any order -> block order (timm's rules)."""
    enc, x = tiny_encoder(), torch.randn(2, 1, 8, 8)
    every = enc.forward_intermediates(x, output_fmt="NLC", intermediates_only=True)
    assert len(every) == 3 and every[0].shape == (2, 16, 32)
    for indices, blocks in ((2, [1, 2]), ([-1, 0], [0, 2]), ([2, 0], [0, 2])):
        got = enc.forward_intermediates(x, indices, output_fmt="NLC", intermediates_only=True)
        assert len(got) == len(blocks)
        for g, b in zip(got, blocks):
            torch.testing.assert_close(g, every[b])


def test_forward_intermediates__nchw_map_and_stop_early():
    enc, x = tiny_encoder(), torch.randn(2, 1, 8, 8)
    nlc = enc.forward_intermediates(x, [1], output_fmt="NLC", intermediates_only=True)[0]
    final, (nchw,) = enc.forward_intermediates(x, [1], stop_early=True)  # NCHW is timm's default
    assert nchw.shape == (2, 32, 4, 4)
    torch.testing.assert_close(nchw[:, :, 1, 3], nlc[:, 1 * 4 + 3])  # row 1, column 3 of the 4x4 grid
    _, (raw,) = enc.forward_intermediates(x, [1], return_prefix_tokens=True, output_fmt="NLC", stop_early=True)
    torch.testing.assert_close(final, enc.norm(torch.cat([raw[1], raw[0]], dim=1)))  # block 1's output, normed


def test_forward_intermediates__rejects_out_of_range():
    enc, x = tiny_encoder(), torch.randn(1, 1, 8, 8)
    with pytest.raises(ValueError, match="within -3..2"):
        enc.forward_intermediates(x, [3])
    with pytest.raises(ValueError, match="within -3..2"):
        enc.forward_intermediates(x, [-4])
    with pytest.raises(ValueError, match="outside 1..3"):
        enc.forward_intermediates(x, 0)
    with pytest.raises(ValueError, match="NHWC"):
        enc.forward_intermediates(x, output_fmt="NHWC")


def timm_twin(enc: ViTEncoder):
    """timm's VisionTransformer with the encoder's dims, holding its state_dict (strict: every key matched)."""
    a = enc.arch
    twin = VisionTransformer(img_size=a["img_size"], patch_size=a["patch_size"], in_chans=a["in_chans"],
                             embed_dim=a["embed_dim"], depth=a["depth"], num_heads=a["num_heads"],
                             mlp_ratio=a["mlp_ratio"], num_classes=0, global_pool="token")
    twin.load_state_dict(enc.state_dict(), strict=True)
    return twin.eval()


@pytest.mark.parametrize("kwargs", [
    {}, {"indices": [1, 2]}, {"indices": 2, "norm": True}, {"indices": [-1], "stop_early": True},
    {"indices": [0, 2], "return_prefix_tokens": True, "output_fmt": "NLC", "intermediates_only": True}])
def test_forward_intermediates__equals_timm_vision_transformer(kwargs):
    """The same call on the encoder and on timm's ViT holding its weights gives the same tensors."""
    enc, x = tiny_encoder(), torch.randn(2, 1, 8, 8)
    twin = timm_twin(enc)
    ours, theirs = enc.forward_intermediates(x, **kwargs), twin.forward_intermediates(x, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(enc(x), twin(x), rtol=0, atol=0)  # pooled cls of the normed tokens
    torch.testing.assert_close(enc.forward_features(x), twin.forward_features(x), rtol=0, atol=0)


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
    ref = enc.forward_intermediates(x, [1], intermediates_only=True)[0]
    enc.truncate(2)
    assert enc.depth == 2 and len(enc.blocks) == 2
    torch.testing.assert_close(enc.forward_intermediates(x, [1], intermediates_only=True)[0], ref)


def test_vit__a_smaller_input_gets_the_positions_of_the_places_it_covers():
    """A crop of half the side (a local crop) gets the table interpolated to its grid: each of its tokens is
    nearest to the mean position of the 2 x 2 image patches at its own place, not to the image's top-left corner
    (the fresh sin-cos table of the crop's own grid, the old behaviour, fails this)."""
    from pipeline.models.pos_embed import interpolate_grid, sincos_2d

    enc = ViTEncoder(64, 4, 1, 32, 2, 2)  # a 16 x 16 grid
    small = torch.randn(3, 1, 32, 32)  # an 8 x 8 grid
    table = interpolate_grid(enc.pos_embed[:, 1:], 16, 8, 8)
    torch.testing.assert_close(enc.embed_patches(small), enc.patch_embed(small) + table)
    assert enc.forward_features(small).shape == (3, 1 + 64, 32)
    full = enc.pos_embed[0, 1:].reshape(16, 16, 32)
    places = full.reshape(8, 2, 8, 2, 32).mean(dim=(1, 3)).reshape(64, 32)  # each 2 x 2 place's mean position
    nearest = torch.cdist(table[0], places).argmin(dim=1)
    assert torch.equal(nearest, torch.arange(64))
    fresh = sincos_2d(32, 8, 8, cls_token=False)[0]
    assert not torch.equal(torch.cdist(fresh, places).argmin(dim=1), torch.arange(64))
    same = torch.randn(2, 1, 64, 64)  # the model's own size still uses its stored table
    torch.testing.assert_close(enc.embed_patches(same), enc.patch_embed(same) + enc.pos_embed[:, 1:])


@pytest.mark.parametrize("cut", [False, True])
def test_model_pt__loads_into_timm_with_every_key_and_the_same_outputs(tmp_path, cut):
    """A written model.pt (arch + encoder) rebuilds as timm's ViT from its arch; a cut encoder has no final norm."""
    enc = tiny_encoder()
    if cut:
        enc.truncate(2)
    save_checkpoint(tmp_path / "model.pt", {"arch": dict(enc.arch), "encoder": enc.state_dict()})
    ckpt = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    a = ckpt["arch"]
    vit = VisionTransformer(img_size=a["img_size"], patch_size=a["patch_size"], in_chans=a["in_chans"],
                            embed_dim=a["embed_dim"], depth=a["depth"], num_heads=a["num_heads"],
                            mlp_ratio=a["mlp_ratio"], num_classes=0, global_pool="token").eval()
    if not a.get("final_norm", True):
        vit.norm = torch.nn.Identity()
    vit.load_state_dict(ckpt["encoder"], strict=True)
    loaded, _ = load_encoder(tmp_path / "model.pt")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(vit(x), loaded.eval()(x), rtol=0, atol=0)
        torch.testing.assert_close(vit.forward_intermediates(x), loaded.forward_intermediates(x), rtol=0, atol=0)
