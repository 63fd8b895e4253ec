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


def test_cc_official_head__contrastive_clusterings_instance_head_is_rebuilt_from_model_pt():
    from pipeline.models.heads import CC_INSTANCE_DIM, CC_INSTANCE_TEMPERATURE
    from pipeline.models.refiner import loss_of

    torch.manual_seed(0)
    encoder = ViTEncoder(16, 4, 1, 32, 3, 2)
    refiner = Refiner(encoder, [1, 2], 24, 8, 16, 10, 1, clusters=4, cc_head="official")
    projector = refiner.heads[-1].projector
    assert [type(m).__name__ for m in projector] == ["Linear", "ReLU", "Linear"]  # no BatchNorm, with biases
    assert projector[0].weight.shape == (32, 32) and projector[2].weight.shape == (CC_INSTANCE_DIM, 32)
    assert refiner.queues[-1].x.shape[-1] == CC_INSTANCE_DIM  # the queue holds the head's embeddings
    ckpt = {"arch": dict(encoder.arch), "head_blocks": [1, 2], "online_encoder": encoder.state_dict(),
            "refiner": refiner.state_dict()}
    embed, _ = saved_head_embedding(ckpt, "model.pt")
    images = torch.randn(5, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(embed(images), projector(head_features(encoder, images, [1, 2])[-1]))
    cfg = {"variants": {"cc": {"pretrained": "mae", "objective": "cc", "cc_head": "official"},
                        "cc_shared": {"pretrained": "mae", "objective": "cc"}},
           "temperature": 0.2, "cluster_temperature": 1.0, "false_negatives": "none", "mochi": {}}
    assert loss_of(cfg, "cc").temperature == CC_INSTANCE_TEMPERATURE == 0.5
    assert loss_of(cfg, "cc_shared").temperature == 0.2
    with pytest.raises(ValueError, match="needs cluster heads"):
        Refiner(encoder, [2], 24, 8, 16, 10, 1, clusters=0, cc_head="official")
