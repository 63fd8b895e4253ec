"""Linear probe on frozen features: BatchNorm without affine, then a linear layer (MAE's protocol)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.eval.selection import grid_pick
from pipeline.stats import correctness_bits


class LinearHeads:
    """One BN(affine=False) + Linear head per lr on features of width `dim`, trained together by SGD (momentum 0.9).

    The heads share the parameter-free BatchNorm and each batch; each has its own init (drawn in the order of
    `lrs`), optimizer group and lr, and the summed loss gives each head the gradient of its own loss only. So a head
    equals the one its lr would get trained alone, and a wide lr grid costs about as much as a single lr.
    """

    def __init__(self, dim: int, num_classes: int, lrs: list[float], weight_decay: float, device: torch.device):
        self.lrs = list(lrs)
        self.norm = nn.BatchNorm1d(dim, affine=False).to(device)
        self.linears = []
        for _ in self.lrs:
            linear = nn.Linear(dim, num_classes)
            nn.init.trunc_normal_(linear.weight, std=0.01)
            nn.init.zeros_(linear.bias)
            self.linears.append(linear.to(device))
        self.opt = torch.optim.SGD([{"params": lin.parameters(), "lr": lr} for lin, lr in zip(self.linears, lrs)],
                                   lr=lrs[0], momentum=0.9, weight_decay=weight_decay)
        self.norm.train()

    def step(self, x: torch.Tensor, y: torch.Tensor, factor: float) -> None:
        """One SGD step of every head on features x [B, dim] and labels y, each at its lr times `factor`."""
        for group, lr in zip(self.opt.param_groups, self.lrs):
            group["lr"] = lr * factor
        x = self.norm(x.float())
        loss = sum(F.cross_entropy(lin(x), y) for lin in self.linears)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def heads(self) -> list[nn.Module]:
        """The trained heads in the order of `lrs`, in eval mode."""
        return [nn.Sequential(self.norm, lin).eval() for lin in self.linears]


def train_linear_heads(train_f: torch.Tensor, train_y: torch.Tensor, num_classes: int, lrs: list[float],
                       epochs: int, batch_size: int, weight_decay: float, seed: int) -> list[nn.Module]:
    """Fit LinearHeads (one per lr) on precomputed features with a cosine lr, in one data pass per epoch.

    Args:
        train_f: [N, D] features; train_y: [N] labels.
        lrs: one peak lr per head.
    Returns:
        The trained heads in the order of `lrs`, in eval mode, on the features' device.
    """
    g = torch.Generator().manual_seed(seed)
    device = train_f.device
    heads = LinearHeads(train_f.shape[1], num_classes, lrs, weight_decay, device)
    n = train_f.shape[0]
    total = epochs * max(1, math.ceil(n / batch_size))
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=g).to(device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if idx.numel() < 2:  # BatchNorm needs two samples
                continue
            heads.step(train_f[idx], train_y[idx], 0.5 * (1 + math.cos(math.pi * step / total)))
            step += 1
    return heads.heads()


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
    return picked_head_record(heads, val, test, grid_key)


def picked_head_record(heads: dict[float, nn.Module], val: tuple[torch.Tensor, torch.Tensor],
                       test: tuple[torch.Tensor, torch.Tensor], grid_key: str) -> dict:
    """The lr of `heads` (lr -> trained head) picked by val argmax, and its head read once on test: linear_probe's
    record (shared with the augmented probe, per feature)."""
    val_acc = {lr: head_accuracy(head, *val) for lr, head in heads.items()}
    selection = grid_pick(val_acc, grid_key, len(val[1]), "argmax")
    best = selection["pick"]
    correct = head_correct(heads[best], *test)
    return {"lr": best, "val": {str(lr): acc for lr, acc in val_acc.items()}, "test": float(correct.float().mean()),
            "test_correct": correctness_bits(correct.cpu()), "selection": selection}
