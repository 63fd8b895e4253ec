"""Full fine-tuning of a pretrained encoder: mean-pooled tokens, LayerNorm, linear head (MAE's protocol; the model
is pipeline/models/classifier.py, the augmentations pipeline/data/augment.py, the recipe params evaluate.finetune).

MAE's ViT-B recipe (facebookresearch/mae FINETUNE.md, main_finetune.py) adds, per image: RandAugment
("rand-m9-mstd0.5-inc1"), random erasing (probability 0.25, per-pixel noise), and learnable position embeddings
initialized from the pretrained sin-cos table. All three are options here (params evaluate.finetune: rand_augment,
reprob, learnable_pos_embed); off, the step is exactly the plain crop + flip + mixup/cutmix one.
Fine-tuning reads the prepared arrays (there is no streaming fine-tune path), so RandAugment runs timm's own
`rand_augment_transform`, the transform `timm.data.create_transform` builds for that string, on each image of the
batch on the host (PIL), after the device crop; random erasing runs on the device.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.data.augment import mix_batch, rand_augment_batch, rand_augment_fn, random_erase, random_resized_crop
from pipeline.data.loader import ImageSplit, epoch_order
from pipeline.models.classifier import Classifier, layer_of
from pipeline.models.vit import ViTEncoder
from pipeline.train import device as rt
from pipeline.train.checkpoint import Checkpointer, load_module_state
from pipeline.train.loop import fit
from pipeline.train.optim import adamw, layer_decay_groups
from pipeline.train.schedules import warmup_cosine


@dataclass(frozen=True)
class FinetuneRecipe:
    """params evaluate.finetune (params.schema.yaml has each key), typed."""

    epochs: int
    warmup_epochs: int
    batch_size: int
    blr: float
    layer_decay: float
    weight_decay: float
    drop_path: float
    mixup: float
    cutmix: float
    smoothing: float
    crop_scale_min: float
    rand_augment: str | None
    reprob: float
    learnable_pos_embed: bool
    checkpoint_every: int

    @classmethod
    def from_params(cls, cfg: dict) -> FinetuneRecipe:
        """The recipe of params evaluate.finetune, its values as the params file gives them."""
        return cls(**{f.name: cfg[f.name] for f in fields(cls)})


def finetune_step_fn(model: Classifier, data: ImageSplit, num_classes: int, recipe: FinetuneRecipe,
                     rand_augment: Callable[[Image.Image], Image.Image] | None = None
                     ) -> Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """step_fn(indices) -> (soft-target cross-entropy, {}) with crops and flips (device), RandAugment (host, if
    given), random erasing with probability `recipe.reprob` and mixup/cutmix (device), in timm's order."""
    def step(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            imgs = random_resized_crop(data.batch(idx), (recipe.crop_scale_min, 1.0))
            if rand_augment is not None:
                imgs = rand_augment_batch(imgs, data, rand_augment)
            if recipe.reprob > 0:
                imgs = random_erase(imgs, recipe.reprob)
            imgs, targets = mix_batch(imgs, data.labels[idx], num_classes, recipe.mixup, recipe.cutmix,
                                      recipe.smoothing)
        logits = model(imgs)
        return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean(), {}
    return step


@torch.no_grad()
def classifier_accuracy(model: Classifier, data: ImageSplit, batch_size: int) -> float:
    """Top-1 accuracy (0..1) on a split, without augmentation."""
    model.eval()
    correct = 0
    for images, labels in data.batches(batch_size):
        correct += int((model(images).argmax(dim=1) == labels).sum())
    return correct / len(data)


def finetune(arch: dict, state: dict, splits: dict[str, ImageSplit], num_classes: int, recipe: FinetuneRecipe,
             seed: int, device: torch.device, precision: str, checkpointer: Checkpointer) -> dict:
    """Fine-tune a copy of the encoder end to end with layer-wise lr decay; val and test accuracy at the end.

    Resumes from `checkpointer` after a kill, and saves to it every `recipe.checkpoint_every` epochs.
    """
    encoder = ViTEncoder(**arch, drop_path_rate=recipe.drop_path)
    load_module_state(encoder, state, "fine-tune encoder")
    model = Classifier(encoder, num_classes, recipe.learnable_pos_embed).to(device)
    groups = layer_decay_groups(model, encoder.depth + 1, layer_of(encoder.depth), recipe.weight_decay,
                                recipe.layer_decay, no_decay_names=("cls_token", "pos_embed"))
    opt = adamw(groups, (0.9, 0.999), device)
    train, bs = splits["train"], recipe.batch_size
    steps = max(1, len(train) // bs)
    lr = recipe.blr * bs / 256
    augment = (rand_augment_fn(recipe.rand_augment, train.size, train.pixel_mean.flatten().tolist())
               if recipe.rand_augment else None)
    step_fn = finetune_step_fn(model, train, num_classes, recipe, augment)
    fit(model, step_fn, lambda e: epoch_order(len(train), bs, seed, e, device), opt,
        lambda s: warmup_cosine(s, recipe.epochs * steps, recipe.warmup_epochs * steps, lr, 1.0e-6),
        recipe.epochs, seed, checkpointer=checkpointer, checkpoint_every=recipe.checkpoint_every,
        autocast=lambda: rt.autocast(device, precision))
    checkpointer.clear()
    return {s: classifier_accuracy(model, splits[s], bs) for s in ("val", "test")}
