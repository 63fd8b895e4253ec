"""Linear probe on frozen features: BatchNorm without affine, then a linear layer (MAE's protocol)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def train_linear(train_f: torch.Tensor, train_y: torch.Tensor, num_classes: int, lr: float, epochs: int,
                 batch_size: int, weight_decay: float, seed: int) -> nn.Module:
    """Fit BN(affine=False) + Linear with SGD (momentum 0.9) and a cosine lr, on precomputed features.

    Args:
        train_f: [N, D] features; train_y: [N] labels.
    Returns:
        The trained head, in eval mode, on the features' device.
    """
    g = torch.Generator().manual_seed(seed)
    head = nn.Sequential(nn.BatchNorm1d(train_f.shape[1], affine=False), nn.Linear(train_f.shape[1], num_classes))
    nn.init.trunc_normal_(head[1].weight, std=0.01)
    nn.init.zeros_(head[1].bias)
    head = head.to(train_f.device)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    n = train_f.shape[0]
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = epochs * steps_per_epoch
    step = 0
    head.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g).to(train_f.device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if idx.numel() < 2:  # BatchNorm needs two samples
                continue
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(head(train_f[idx].float()), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return head.eval()


@torch.no_grad()
def head_accuracy(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (0..1) of a trained head."""
    return float((head(feats.float()).argmax(dim=1) == labels).float().mean())


def linear_probe(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], num_classes: int, lrs: list[float], epochs: int,
                 batch_size: int, weight_decay: float, seed: int) -> dict:
    """Pick the lr on the validation split, then report that head's test accuracy (test is read once).

    Returns:
        {"lr": chosen lr, "val": {lr: val accuracy}, "test": test accuracy of the chosen head}
    """
    heads, val_acc = {}, {}
    for lr in lrs:
        heads[lr] = train_linear(*train, num_classes, lr, epochs, batch_size, weight_decay, seed)
        val_acc[lr] = head_accuracy(heads[lr], *val)
    best = max(lrs, key=lambda lr: (val_acc[lr], -lr))
    return {"lr": best, "val": {str(lr): acc for lr, acc in val_acc.items()}, "test": head_accuracy(heads[best], *test)}
