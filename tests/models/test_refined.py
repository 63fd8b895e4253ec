"""A refined model.pt's heads rebuilt for evaluation: the embedding the collapse analysis reads."""
from __future__ import annotations

import pytest
import torch

from pipeline.models.refined import saved_head_embedding
from pipeline.models.refiner import Refiner, head_features
from pipeline.models.vit import ViTEncoder


@pytest.mark.parametrize("blocks", [[1, 2], [0, 1]])
def test_saved_head_embedding__is_the_last_heads_projector_of_the_online_encoder(blocks):
    torch.manual_seed(0)
    encoder = ViTEncoder(16, 4, 1, 32, 3, 2)
    refiner = Refiner(encoder, blocks, 24, 8, 16, 10, 1)
    refiner.train()
    refiner.heads[-1](torch.randn(6, 32))  # move the BatchNorm running statistics off their start
    refiner.eval()
    ckpt = {"arch": dict(encoder.arch), "head_blocks": blocks, "online_encoder": encoder.state_dict(),
            "refiner": refiner.state_dict()}
    embed, block = saved_head_embedding(ckpt, "model.pt")
    images = torch.randn(5, 1, 16, 16)
    with torch.no_grad():
        expected = refiner.heads[-1].projector(head_features(encoder, images, blocks)[-1])
        torch.testing.assert_close(embed(images), expected)
    assert block == blocks[-1] and embed(images).shape == (5, 8)
