"""MAE's fine-tuning recipe: its typed params and the step with every option on (random erasing, RandAugment,
learnable position embeddings)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.data.augment import rand_augment_fn
from pipeline.data.loader import DeviceImages
from pipeline.models.classifier import Classifier
from pipeline.models.vit import ViTEncoder
from pipeline.train.finetune import FinetuneRecipe, finetune_step_fn
from tests.conftest import tiny_params

RECIPE = tiny_params()["evaluate"]["finetune"]


def _images(n=6, side=16, channels=3):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, side, side, channels), dtype=np.uint8)
    return DeviceImages(x, np.arange(n) % 3, [0.5] * channels, [0.25] * channels, torch.device("cpu"))


def test_finetune_recipe__from_params_keeps_every_value_as_given():
    recipe = FinetuneRecipe.from_params(RECIPE)
    assert dataclasses.asdict(recipe) == RECIPE  # every key of evaluate.finetune, none added
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.epochs = 2  # type: ignore[misc]
    with pytest.raises(KeyError):
        FinetuneRecipe.from_params({k: v for k, v in RECIPE.items() if k != "blr"})


def test_finetune_step_fn__the_full_recipe_gives_a_finite_loss():
    data = _images()
    model = Classifier(ViTEncoder(16, 4, 3, 32, 2, 2), 3, learnable_pos_embed=True)
    recipe = FinetuneRecipe.from_params(dict(RECIPE, crop_scale_min=0.08, mixup=0.8, cutmix=1.0, smoothing=0.1,
                                             reprob=0.25, rand_augment="rand-m9-mstd0.5-inc1"))
    step = finetune_step_fn(model, data, 3, recipe, rand_augment=rand_augment_fn(recipe.rand_augment, 16, [0.5] * 3))
    torch.manual_seed(0)
    loss, _ = step(torch.arange(6))
    assert torch.isfinite(loss) and loss.item() > 0
