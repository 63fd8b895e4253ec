"""MAE reconstruction loss (facebookresearch/mae models_mae.py `forward_loss`), shared by MAE and MFF."""
from __future__ import annotations

import torch


def reconstruction_loss(target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, norm_pix: bool,
                        per_image: bool = False) -> torch.Tensor:
    """Mean squared error over the removed patches only.

    Args:
        target: [B, N, P] patchified images.
        pred: [B, N, P] decoder predictions.
        mask: [B, N], 1 = removed (counted), 0 = visible (ignored).
        norm_pix: normalize each target patch by its own mean and unbiased variance (+1e-6) first.
        per_image: one loss per image [B] (its removed patches' mean) instead of the batch's scalar.
    Returns:
        Scalar loss: sum over removed patches of the per-patch MSE, divided by the number removed.
    """
    if target.shape != pred.shape or mask.shape != target.shape[:2]:
        raise ValueError(f"shapes differ: target {tuple(target.shape)}, pred {tuple(pred.shape)}, "
                         f"mask {tuple(mask.shape)}")
    target = target.float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = ((pred.float() - target) ** 2).mean(dim=-1)
    if per_image:
        return (per_patch * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1)
