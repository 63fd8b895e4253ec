"""Fine-tuning parts: layer-wise lr decay groups and mixup/cutmix targets."""
from __future__ import annotations

import pytest
import torch

from pipeline.data.augment import mix_batch
from pipeline.models.classifier import Classifier, layer_of
from pipeline.models.vit import ViTEncoder
from pipeline.train.optim import layer_decay_groups


def test_layer_decay_groups__scales_by_depth():
    model = Classifier(ViTEncoder(8, 2, 1, 32, 3, 2), num_classes=4)
    groups = layer_decay_groups(model, 4, layer_of(3), weight_decay=0.05, decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    wd = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert scale[id(model.head.weight)] == 1.0
    assert scale[id(model.encoder.blocks[2].attn.qkv.weight)] == 0.5          # block 2 -> layer 3
    assert scale[id(model.encoder.blocks[0].attn.qkv.weight)] == 0.5 ** 3     # block 0 -> layer 1
    assert scale[id(model.encoder.patch_embed.proj.weight)] == 0.5 ** 4       # embeddings -> layer 0
    assert wd[id(model.encoder.blocks[0].norm1.weight)] == 0.0 and wd[id(model.head.weight)] == 0.05
    assert sum(len(g["params"]) for g in groups) == len([p for p in model.parameters() if p.requires_grad])


@pytest.mark.parametrize("mixup, cutmix", [(0.0, 0.0), (0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mix_batch__targets_are_distributions(mixup, cutmix):
    torch.manual_seed(0)
    images, labels = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    mixed, targets = mix_batch(images, labels, 3, mixup, cutmix, smoothing=0.1)
    assert mixed.shape == images.shape and targets.shape == (6, 3)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(6))
    if mixup == cutmix == 0:
        assert torch.equal(mixed, images)
        assert targets[0].tolist() == pytest.approx([0.1 / 3 + 0.9, 0.1 / 3, 0.1 / 3])
