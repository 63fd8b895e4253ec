"""Optimizer set-up: AdamW with MAE's weight-decay groups."""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn as nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: no decay for 1-D tensors and biases (norms, biases), decay for the rest.

    As in timm's `param_groups_weight_decay` used by MAE; cls/mask tokens (3-D) are decayed like the official code.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


@functools.cache
def fused_supported(device_type: str) -> bool:
    """Whether this torch has the fused AdamW kernel for `device_type` (cuda; cpu since torch 2.4).

    Asked of torch by building one on a probe tensor: the list of devices is private API.
    """
    try:
        torch.optim.AdamW([torch.zeros(1, device=device_type, requires_grad=True)], fused=True)
    except RuntimeError:  # no kernel for this device type (or no such device)
        return False
    return True


def adamw(groups: list[dict], betas: tuple[float, float], device: torch.device) -> torch.optim.AdamW:
    """AdamW over param groups (lr set by the schedule), with the fused kernel (one pass over all parameters, no
    per-tensor op chain) wherever torch has it for `device`. It follows the same update as the for-each kernel up to
    float rounding (tests/train/test_fused_adamw.py), and resumes exactly from its own checkpoints."""
    return torch.optim.AdamW(groups, lr=0.0, betas=betas, fused=fused_supported(device.type))


def layer_decay_groups(model: nn.Module, num_layers: int, layer_of: Callable[[str], int], weight_decay: float,
                       decay: float, no_decay_names: tuple[str, ...] = ()) -> list[dict]:
    """Param groups with lr_scale = decay ** (num_layers - layer) (BEiT/MAE layer-wise lr decay).

    Args:
        model: the module to optimize.
        num_layers: the index of the top layer (the head); it gets scale 1.
        layer_of: parameter name -> layer index (0 = embeddings, i + 1 = block i, num_layers = head).
        weight_decay: applied to weights with two or more dimensions; biases and norms get none.
        decay: per-layer factor, e.g. 0.65 for 12 blocks (facebookresearch/mae FINETUNE.md, ViT-B).
        no_decay_names: parameters whose name ends with one of these get no weight decay either (MAE's fine-tune
            excludes the cls token and the position table: util/lr_decay.py's no_weight_decay_list).
    """
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = layer_of(name)
        no_decay = p.ndim <= 1 or name.endswith(".bias") or name.endswith(no_decay_names)
        group = groups.setdefault((layer, no_decay), {
            "params": [], "weight_decay": 0.0 if no_decay else weight_decay,
            "lr_scale": decay ** (num_layers - layer)})
        group["params"].append(p)
    return list(groups.values())
