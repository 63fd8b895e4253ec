"""The fine-tuning classifier: learnable position embeddings from the sin-cos table, the layer of each parameter."""
from __future__ import annotations

import torch

from pipeline.models.classifier import Classifier, layer_of
from pipeline.models.pos_embed import sincos_2d
from pipeline.models.vit import ViTEncoder


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
