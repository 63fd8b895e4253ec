"""Optimizer set-up: AdamW with MAE's weight-decay groups."""
from __future__ import annotations

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


def adamw(model: nn.Module, weight_decay: float, betas: tuple[float, float], device: torch.device
          ) -> torch.optim.AdamW:
    """AdamW over `param_groups`; the fused kernel on cuda (one launch for all parameters)."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=0.0, betas=betas,
                             fused=device.type == "cuda")
