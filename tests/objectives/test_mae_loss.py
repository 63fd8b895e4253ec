"""The reconstruction loss counts removed patches only (hand-computed cases)."""
from __future__ import annotations

import pytest
import torch

from pipeline.objectives.mae import reconstruction_loss


def test_reconstruction_loss__masked_patches_only_by_hand():
    target = torch.zeros(1, 3, 2)
    pred = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [100.0, 100.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third patch is visible: its huge error must not count
    # per-patch MSE: 1.0 and 2.0 -> mean over the two removed = 1.5
    assert reconstruction_loss(target, pred, mask, norm_pix=False).item() == pytest.approx(1.5)


def test_reconstruction_loss__norm_pix_uses_unbiased_variance():
    target = torch.tensor([[[1.0, 3.0]]])  # mean 2, unbiased var 2
    pred = torch.zeros(1, 1, 2)
    expected = ((1 / (2 + 1e-6) ** 0.5) ** 2 + (1 / (2 + 1e-6) ** 0.5) ** 2) / 2
    assert reconstruction_loss(target, pred, torch.ones(1, 1), norm_pix=True).item() == pytest.approx(expected)


def test_reconstruction_loss__shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        reconstruction_loss(torch.zeros(1, 3, 2), torch.zeros(1, 3, 3), torch.ones(1, 3), False)
