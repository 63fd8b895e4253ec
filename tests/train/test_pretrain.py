"""Pretraining's typed recipe and what a run's outputs keep (the run itself: tests/stages/test_stages.py)."""
from __future__ import annotations

import dataclasses

import pytest

from pipeline.train.loop import FitResult
from pipeline.train.pretrain import PretrainRecipe, pretrain_outputs
from tests.conftest import tiny_params

PRE = tiny_params()["pretrain"]


def test_pretrain_recipe__a_variant_epochs_replaces_pretrain_epochs():
    recipe = PretrainRecipe.from_params(PRE, {"fuse_blocks": [], "fusion": "softmax"})
    assert recipe.epochs == PRE["epochs"] and recipe.blr == PRE["blr"] and recipe.hflip == PRE["hflip"]
    assert PretrainRecipe.from_params(PRE, {"epochs": None}).epochs == PRE["epochs"]
    assert PretrainRecipe.from_params(PRE, {"epochs": 0}).epochs == 0  # an imported model, untrained
    # every key but the variants, and the variant's own optional keys at their defaults
    assert set(dataclasses.asdict(recipe)) == set(PRE) - {"variants"} | {"augment", "fusion_lr_scale",
                                                                         "fusion_weight_decay"}
    assert (recipe.augment, recipe.fusion_lr_scale, recipe.fusion_weight_decay) == ("rrc", 1.0, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.epochs = 3  # type: ignore[misc]


def test_pretrain_outputs__curve_without_timings_and_rounded_metrics():
    result = FitResult(history=[{"epoch": 1, "step": 4, "loss": 0.12345678, "images_per_s": 99.0}], steps=4)
    curve, metrics = pretrain_outputs(result, 1, None, [1, 2], [0.25, 0.75])
    assert curve == [{"epoch": 1, "step": 4, "loss": 0.12345678}]
    assert metrics == {"loss": 0.123457, "epochs": 1, "steps": 4, "fusion_weights": {"1": 0.25, "2": 0.75}}
    _, untrained = pretrain_outputs(FitResult(), 0, {"init": "x.pt"}, [], [])
    assert untrained == {"loss": None, "epochs": 0, "steps": 0, "init": {"init": "x.pt"}, "fusion_weights": {}}
