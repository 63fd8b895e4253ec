"""The per-block reconstruction probe on a hand-built encoder whose blocks hold known information."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from pipeline.data.loader import DeviceImages
from pipeline.eval.reconstruction import DecoderRecipe, per_block_reconstruction
from pipeline.models.mae import BlockDecoder, MaskedAutoencoder, patchify
from pipeline.models.vit import ViTEncoder
from pipeline.objectives.mae import reconstruction_loss


class KnownBlocks(ViTEncoder):
    """A ViTEncoder whose block 0 outputs the visible input patches themselves (a token is the raw pixels of its
    patch beside as many constant ones, which keep the pixels' level through the decoder's LayerNorm, positions
    added) and whose block 1 outputs noise of the same shape: block 0 holds the image, block 1 nothing."""

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        patches = patchify(x, self.patch_size)
        return torch.cat([patches, torch.ones_like(patches)], dim=-1) + self.pos_embed[:, 1:]

    def run_blocks(self, tokens, keep, blocks=None):
        noise = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(tokens.shape[0]))
        outputs = [tokens, noise]
        return outputs[-1], [outputs[i] for i in keep]


def smooth_images(n: int, seed: int) -> np.ndarray:
    """[n, 8, 8, 1] uint8: a vertical gradient of random slope and offset per image (the masked patches follow
    from the visible ones)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, 8)[None, :, None, None]
    x = rng.uniform(0, 0.5, (n, 1, 1, 1)) + rng.uniform(0, 0.5, (n, 1, 1, 1)) * ramp
    return np.broadcast_to(255 * x, (n, 8, 8, 1)).round().astype(np.uint8).copy()


def test_per_block_reconstruction__the_block_holding_the_input_patches_reconstructs_best():
    torch.manual_seed(0)
    encoder = KnownBlocks(img_size=8, patch_size=2, in_chans=1, embed_dim=8, depth=2, num_heads=1)
    recipe = DecoderRecipe(decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=1, steps=150, warmup_steps=10,
                           batch_size=32, lr=3.0e-3, weight_decay=0.0, val_images=64)
    cpu = torch.device("cpu")
    train = DeviceImages(smooth_images(512, 0), np.zeros(512, np.int64), [0.25], [0.2], cpu)
    val = DeviceImages(smooth_images(64, 1), np.zeros(64, np.int64), [0.25], [0.2], cpu)
    out = per_block_reconstruction(encoder, train, val, recipe, 0.75, False, 0, cpu, contextlib.nullcontext)
    assert out["images"] == 64 and out["steps"] == 150 and len(out["loss"]) == len(out["se"]) == 2
    # the patches' block predicts the masked ones far better than the noise block (beyond 5 standard errors)
    assert out["loss"][0] + 5 * (out["se"][0] + out["se"][1]) < out["loss"][1]


def test_reconstruction_loss__per_image_losses_average_to_the_batch_loss_at_equal_mask_counts():
    target, pred = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    mask = torch.tensor([[1.0, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]])
    per_image = reconstruction_loss(target, pred, mask, False, per_image=True)
    by_hand = torch.stack([((pred[i] - target[i]) ** 2).mean(-1)[mask[i] == 1].mean() for i in range(3)])
    torch.testing.assert_close(per_image, by_hand)
    torch.testing.assert_close(per_image.mean(), reconstruction_loss(target, pred, mask, False))


def test_block_decoder__built_like_the_mae_decoder():
    torch.manual_seed(0)
    encoder = ViTEncoder(img_size=8, patch_size=2, in_chans=1, embed_dim=8, depth=2, num_heads=2)
    mae = MaskedAutoencoder(encoder, 16, 1, 2)
    names = {k for k in mae.state_dict() if not k.startswith("encoder.")}
    assert {k for k in BlockDecoder(encoder, 16, 1, 2).state_dict() if not k.startswith("norm.")} == names
