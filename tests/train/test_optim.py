"""Layer-wise lr decay groups: scales by layer, and no weight decay on biases, norms and the named tokens."""
from __future__ import annotations

import pytest

from pipeline.models.classifier import Classifier, layer_of
from pipeline.models.vit import ViTEncoder
from pipeline.train.optim import layer_decay_groups


def _decay_of(groups: list[dict], model) -> dict[str, tuple[float, float]]:
    ids = {id(p): n for n, p in model.named_parameters()}
    return {ids[id(p)]: (g["weight_decay"], g["lr_scale"]) for g in groups for p in g["params"]}


@pytest.mark.parametrize("learnable_pos_embed", [False, True])
def test_layer_decay_groups__fine_tune_spares_the_cls_token_and_position_table(learnable_pos_embed):
    """MAE's fine-tune (util/lr_decay.py) decays neither the cls token nor the position table."""
    model = Classifier(ViTEncoder(8, 2, 1, 16, 2, 2), 3, learnable_pos_embed)
    plain = _decay_of(layer_decay_groups(model, 3, layer_of(2), 0.05, 0.5), model)
    spared = _decay_of(layer_decay_groups(model, 3, layer_of(2), 0.05, 0.5, ("cls_token", "pos_embed")), model)
    assert plain["encoder.cls_token"] == (0.05, 0.125) and spared["encoder.cls_token"] == (0.0, 0.125)
    if learnable_pos_embed:
        assert spared["encoder.pos_embed"] == (0.0, 0.125)
    assert spared["encoder.blocks.1.attn.qkv.weight"] == (0.05, 0.5)  # block 1 -> layer 2
    assert all(wd == 0.0 for n, (wd, _) in spared.items() if n.endswith(".bias"))
    assert {n: v for n, v in plain.items() if n not in ("encoder.cls_token", "encoder.pos_embed")} == \
        {n: v for n, v in spared.items() if n not in ("encoder.cls_token", "encoder.pos_embed")}
