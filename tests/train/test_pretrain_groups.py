"""The MFF fusion logits' own lr scale and weight decay (a variant's fusion_lr_scale / fusion_weight_decay)."""
from __future__ import annotations

import dataclasses

import torch

from pipeline.models.mae import ModelSpec
from pipeline.train.optim import param_groups
from pipeline.train.pretrain import PretrainRecipe, pretrain_groups

PRE = {"epochs": 2, "warmup_epochs": 1, "batch_size": 8, "blr": 1.0e-3, "min_lr": 0.0, "weight_decay": 0.05,
       "beta1": 0.9, "beta2": 0.95, "mask_ratio": 0.75, "norm_pix_loss": False, "crop_scale_min": 0.2, "hflip": True,
       "checkpoint_every": 1}


def _mff():
    spec = ModelSpec(2, 16, 3, 2, 4.0, 16, 1, 2)
    return spec.autoencoder(spec.encoder(8, 1), [0, 2], "softmax")


def test_pretrain_groups__defaults_are_maes_groups_and_a_scale_moves_the_logits_alone():
    model = _mff()
    recipe = PretrainRecipe.from_params(PRE, {"fuse_blocks": [0, 2], "fusion": "softmax"})
    assert recipe.augment == "rrc" and recipe.fusion_lr_scale == 1.0 and recipe.fusion_weight_decay == 0.0
    same = pretrain_groups(model, recipe)
    ref = param_groups(model, 0.05)
    assert [[id(p) for p in g["params"]] for g in same] == [[id(p) for p in g["params"]] for g in ref]
    scaled = pretrain_groups(model, dataclasses.replace(recipe, fusion_lr_scale=100.0, fusion_weight_decay=0.05))
    *rest, own = scaled
    assert own == {"params": [model.fusion.logits], "weight_decay": 0.05, "lr_scale": 100.0}
    ids = [id(p) for g in rest for p in g["params"]]
    assert id(model.fusion.logits) not in ids
    assert len(ids) + 1 == sum(1 for p in model.parameters() if p.requires_grad)


def test_pretrain_groups__a_100x_scale_moves_the_logits_100x_further_in_one_adam_step():
    moved = {}
    for scale in (1.0, 100.0):
        torch.manual_seed(0)
        model = _mff()
        recipe = PretrainRecipe.from_params(PRE, {"fuse_blocks": [0, 2], "fusion": "softmax",
                                                  "fusion_lr_scale": scale})
        opt = torch.optim.AdamW(pretrain_groups(model, recipe), lr=1.0e-4)
        for g in opt.param_groups:
            g["lr"] = 1.0e-4 * g.get("lr_scale", 1.0)
        images = torch.randn(4, 1, 8, 8)
        pred, mask = model(images, 0.75, torch.Generator().manual_seed(0))
        ((pred - model.patchify(images)) ** 2).mean().backward()
        before = model.fusion.logits.detach().clone()
        opt.step()
        moved[scale] = (model.fusion.logits.detach() - before).abs()
    # Adam's first step moves each entry by lr (sign of the gradient): 100x the lr, 100x the move
    torch.testing.assert_close(moved[100.0], 100 * moved[1.0], rtol=1e-3, atol=0)
