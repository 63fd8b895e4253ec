"""Linear probe on frozen features: BatchNorm without affine, then a linear layer (MAE's protocol)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.eval.selection import grid_pick
from pipeline.stats import correctness_bits


def train_linear_heads(train_f: torch.Tensor, train_y: torch.Tensor, num_classes: int, lrs: list[float],
                       epochs: int, batch_size: int, weight_decay: float, seed: int) -> list[nn.Module]:
    """Fit one BN(affine=False) + Linear head per lr with SGD (momentum 0.9) and a cosine lr, in one data pass.

    The heads share the batches (one order, from `seed`) and the parameter-free BatchNorm; each has its own
    init (drawn in the order of `lrs`), optimizer group and lr, and the summed loss gives each head the gradient
    of its own loss only. So a head equals the one its lr would get trained alone, and a wide lr grid costs
    about as much as a single lr.

    Args:
        train_f: [N, D] features; train_y: [N] labels.
        lrs: one peak lr per head.
    Returns:
        The trained heads in the order of `lrs`, in eval mode, on the features' device.
    """
    g = torch.Generator().manual_seed(seed)
    dim, device = train_f.shape[1], train_f.device
    norm = nn.BatchNorm1d(dim, affine=False).to(device)
    linears = []
    for _ in lrs:
        linear = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)
        linears.append(linear.to(device))
    opt = torch.optim.SGD([{"params": lin.parameters(), "lr": lr} for lin, lr in zip(linears, lrs)], lr=lrs[0],
                          momentum=0.9, weight_decay=weight_decay)
    n = train_f.shape[0]
    total = epochs * max(1, math.ceil(n / batch_size))
    step = 0
    norm.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g).to(device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if idx.numel() < 2:  # BatchNorm needs two samples
                continue
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            x = norm(train_f[idx].float())
            loss = sum(F.cross_entropy(lin(x), train_y[idx]) for lin in linears)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return [nn.Sequential(norm, lin).eval() for lin in linears]


@torch.no_grad()
def head_correct(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[N] bool: whether a trained head gets each image right."""
    return head(feats.float()).argmax(dim=1) == labels


def head_accuracy(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (0..1) of a trained head."""
    return float(head_correct(head, feats, labels).float().mean())


def linear_probe(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], num_classes: int, lrs: list[float], epochs: int,
                 batch_size: int, weight_decay: float, seed: int, grid_key: str = "evaluate.linear.lrs") -> dict:
    """Pick the lr on the validation split, then report that head's test accuracy (test is read once).

    Args:
        train, val, test: ([N, D] features, [N] labels) of each split.
        lrs: the grid (at least two values), picked by val argmax (a larger lr is no simpler model, so the
            one-standard-error rule has no direction here); grid_key: its params key, named on an edge pick.
    Returns:
        {"lr": chosen lr, "val": {lr: val accuracy}, "test": test accuracy of the chosen head, "test_correct": its
         per-image correctness (`stats.correctness_bits`), "selection": `selection.grid_pick`'s record}
    """
    heads = dict(zip(lrs, train_linear_heads(*train, num_classes, lrs, epochs, batch_size, weight_decay, seed)))
    val_acc = {lr: head_accuracy(head, *val) for lr, head in heads.items()}
    selection = grid_pick(val_acc, grid_key, len(val[1]), "argmax")
    best = selection["pick"]
    correct = head_correct(heads[best], *test)
    return {"lr": best, "val": {str(lr): acc for lr, acc in val_acc.items()}, "test": float(correct.float().mean()),
            "test_correct": correctness_bits(correct.cpu()), "selection": selection}
