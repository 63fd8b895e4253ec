"""Fixed 2-D sin-cos position embeddings (facebookresearch/mae util/pos_embed.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """[M] positions -> [M, dim]: first half sin(pos * w_k), second half cos, w_k = 1 / 10000^(k / (dim/2))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.double().reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int, cls_token: bool = True) -> torch.Tensor:
    """Position table [1, (1 +) H*W, dim] in row-major token order; the cls row is all zeros.

    The first dim/2 channels encode the column (x) coordinate, the last dim/2 the row (y), as in MAE.
    """
    ys, xs = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    emb = torch.cat([sincos_1d(dim // 2, xs.flatten()), sincos_1d(dim // 2, ys.flatten())], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float().unsqueeze(0)


def interpolate_grid(table: torch.Tensor, grid: int, new_h: int, new_w: int) -> torch.Tensor:
    """A [1, grid*grid, D] position table (no cls row) resampled bicubically to new_h x new_w tokens, as
    MIM-Refiner and timm (`resample_abs_pos_embed`) give a smaller crop the positions of the whole image: token
    (i, j) of the crop gets the positions of the place of the image it covers.

    Returns:
        [1, new_h*new_w, D] in the table's dtype.
    """
    d = table.shape[-1]
    x = table.reshape(1, grid, grid, d).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(1, new_h * new_w, d).to(table.dtype)
