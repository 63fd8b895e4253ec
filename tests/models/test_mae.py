"""MAE masking and MFF fusion."""
from __future__ import annotations

import torch

from pipeline.models.fusion import MultiLevelFusion, mff_fuse
from pipeline.models.mae import MaskedAutoencoder, ModelSpec, patchify, random_masking
from pipeline.models.vit import ViTEncoder


def test_random_masking__keeps_exact_count_per_sample():
    tokens = torch.randn(5, 16, 4)
    kept, mask, ids_restore = random_masking(tokens, 0.75)
    assert kept.shape == (5, 4, 4)
    assert mask.sum(dim=1).tolist() == [12.0] * 5
    # the kept tokens are exactly the unmasked ones, in order of the noise
    for b in range(5):
        visible = tokens[b, mask[b] == 0]
        assert sorted(map(tuple, visible.tolist())) == sorted(map(tuple, kept[b].tolist()))
    assert torch.equal(torch.sort(ids_restore, dim=1).values, torch.arange(16).expand(5, -1))


def test_random_masking__keep_count_rounds_down_like_mae():
    _, mask, _ = random_masking(torch.randn(2, 49, 3), 0.75)  # int(49 * 0.25) = 12 kept
    assert mask.sum(dim=1).tolist() == [37.0, 37.0]


def test_patchify__row_col_channel_order():
    img = torch.arange(2 * 4 * 4.0).view(1, 2, 4, 4)  # 2 channels, 4x4, patches of 2
    p = patchify(img, 2)
    assert p.shape == (1, 4, 8)
    # first patch: pixels (0,0),(0,1),(1,0),(1,1), channel last
    assert p[0, 0].tolist() == [0.0, 16.0, 1.0, 17.0, 4.0, 20.0, 5.0, 21.0]


def test_mff_fuse__one_hot_weights_return_that_block():
    feats = [torch.randn(2, 3, 4) for _ in range(3)]
    out = mff_fuse(feats, torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(out, feats[1])


def test_fusion_weights__softmax_sums_to_one_and_start_uniform():
    fusion = MultiLevelFusion(8, [0, 2, 5])
    w = fusion.weights()
    torch.testing.assert_close(w.sum(), torch.tensor(1.0))
    torch.testing.assert_close(w, torch.full((3,), 1 / 3))
    assert len(fusion.proj) == 2  # the last block goes in unprojected


def test_mff_checkpoint__encoder_loads_into_plain_encoder():
    torch.manual_seed(0)
    enc = ViTEncoder(8, 2, 1, 32, 3, 2)
    mff = MaskedAutoencoder(enc, 16, 1, 2, fuse_blocks=[0, 2])
    pred, mask = mff(torch.randn(2, 1, 8, 8), 0.5)
    assert pred.shape == (2, 16, 4) and mask.shape == (2, 16)
    plain = ViTEncoder(8, 2, 1, 32, 3, 2)
    plain.load_state_dict(enc.state_dict(), strict=True)
    x = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(plain.eval().forward_features(x), enc.eval().forward_features(x))


def test_mff_mean_fusion__weights_stay_uniform_through_training():
    torch.manual_seed(0)
    model = MaskedAutoencoder(ViTEncoder(8, 2, 1, 32, 3, 2), 16, 1, 2, fuse_blocks=[0, 2], fusion="mean")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    pred, _ = model(torch.randn(4, 1, 8, 8), 0.5)
    pred.pow(2).mean().backward()
    opt.step()
    assert model.fusion_weights() == [0.5, 0.5]


def test_model_spec__builds_the_models_of_params_model_with_its_values_as_given():
    cfg = {"patch_size": 2, "embed_dim": 16, "depth": 2, "num_heads": 2, "mlp_ratio": 4.0, "decoder_embed_dim": 8,
           "decoder_depth": 1, "decoder_num_heads": 1}
    spec = ModelSpec.from_params(cfg)
    torch.manual_seed(0)
    encoder = spec.encoder(8, 1)
    torch.manual_seed(0)
    by_hand = ViTEncoder(8, 2, 1, 16, 2, 2, 4.0)
    assert encoder.arch == by_hand.arch and type(encoder.arch["mlp_ratio"]) is float  # model.pt's arch
    assert all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), by_hand.state_dict().values()))
    mae = spec.autoencoder(encoder, [0, 1], "mean")
    assert mae.encoder is encoder and mae.decoder_embed.out_features == 8 and len(mae.decoder_blocks) == 1
