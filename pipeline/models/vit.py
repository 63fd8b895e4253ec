"""ViT encoder on timm's PatchEmbed and Block, with every block's output one call away.

Follows timm's contract: forward_features -> forward_head, plus forward_intermediates(x, indices) that takes an
explicit 0-based list of blocks and an explicit norm choice (STYLE.md rule 5).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block

from pipeline.models.pos_embed import sincos_2d

POOLS = ("cls", "mean_patch")


def init_mae_weights(module: nn.Module) -> None:
    """MAE init: xavier-uniform Linear with zero bias, LayerNorm (1, 0) (reference/mae_mff.md A.1)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def pool_tokens(tokens: torch.Tensor, pool: str) -> torch.Tensor:
    """[B, 1+N, D] -> [B, D]: the cls token, or the mean of the patch tokens."""
    if pool == "cls":
        return tokens[:, 0]
    if pool == "mean_patch":
        return tokens[:, 1:].mean(dim=1)
    raise ValueError(f"unknown pool {pool!r} (known: {', '.join(POOLS)})")


class ViTEncoder(nn.Module):
    """Vision Transformer encoder with a cls token and fixed 2-D sin-cos positions.

    Inputs of another side (a multiple of the patch) get the sin-cos table of their own grid: the positions are
    a formula, not weights, so MIM-Refiner's small local crops (96 px for a 224 px model) need no interpolation.

    Args:
        img_size: input side in pixels (square images).
        patch_size: patch side; must divide img_size.
        in_chans: image channels.
        embed_dim: token width D.
        depth: number of blocks L.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width / D.
        drop_path_rate: stochastic depth of the last block, rising linearly from 0 (fine-tuning only; it is not
            part of `arch`, which describes the weights).
        final_norm: the LayerNorm after the last block; False for an encoder cut below its last block (that norm
            was trained on the last block's output, so a cut encoder's features are its last kept block's raw
            output, as MIM-Refiner reads every non-final block).
    """

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float = 4.0, drop_path_rate: float = 0.0, final_norm: bool = True):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"patch_size {patch_size} does not divide image size {img_size}")
        self.arch = dict(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                         depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio)
        if not final_norm:  # recorded only when off, so full encoders keep the arch they always had
            self.arch["final_norm"] = False
        self.patch_size, self.embed_dim, self.depth = patch_size, embed_dim, depth
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, strict_img_size=False)
        grid = img_size // patch_size
        self.num_patches = grid * grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", sincos_2d(embed_dim, grid, grid, cls_token=True))
        norm = partial(nn.LayerNorm, eps=1e-6)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm,
                                          drop_path=r) for r in rates)
        self.norm = norm(embed_dim) if final_norm else nn.Identity()
        init_mae_weights(self)
        w = self.patch_embed.proj.weight  # conv init "like nn.Linear" on its 2-D view
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> patch tokens with positions [B, N, D] (no cls)."""
        tokens = self.patch_embed(x)
        if tokens.shape[1] == self.num_patches:
            return tokens + self.pos_embed[:, 1:]
        gh, gw = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        return tokens + sincos_2d(self.embed_dim, gh, gw, cls_token=False).to(tokens)

    def prepend_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, N, D] -> [B, 1+N, D] with the cls token (its position row is zero)."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def run_blocks(self, tokens: torch.Tensor, keep: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run all blocks on [B, 1+N, D] tokens; return the last output and the outputs of blocks `keep`."""
        kept, wanted = [], set(keep)
        for i, blk in enumerate(self.blocks):
            tokens = blk(tokens)
            if i in wanted:
                kept.append(tokens)
        return tokens, kept

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> normed tokens [B, 1+N, D]."""
        tokens, _ = self.run_blocks(self.prepend_cls(self.embed_patches(x)), [])
        return self.norm(tokens)

    def forward_head(self, tokens: torch.Tensor, pool: str = "cls") -> torch.Tensor:
        """Normed tokens [B, 1+N, D] -> pooled features [B, D]."""
        return pool_tokens(tokens, pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: list[int], norm: bool) -> list[torch.Tensor]:
        """Outputs [B, 1+N, D] of the blocks in `indices` (0-based, ascending), optionally through the final norm.

        Raises:
            ValueError: an index is outside 0..depth-1 or the list is not ascending.
        """
        if any(i < 0 or i >= self.depth for i in indices) or list(indices) != sorted(set(indices)):
            raise ValueError(f"block indices {indices} must be ascending and within 0..{self.depth - 1}")
        _, kept = self.run_blocks(self.prepend_cls(self.embed_patches(x)), list(indices))
        return [self.norm(t) for t in kept] if norm else kept

    def truncate(self, depth: int) -> None:
        """Keep only the first `depth` blocks (refine.depth); a real cut also drops the final norm (see `final_norm`)."""
        if not 1 <= depth <= self.depth:
            raise ValueError(f"depth {depth} outside 1..{self.depth}")
        if depth < self.depth:
            self.blocks = self.blocks[:depth]
            self.norm = nn.Identity()
            self.depth = depth
            self.arch.update(depth=depth, final_norm=False)
