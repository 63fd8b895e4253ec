"""ViT encoder on timm's PatchEmbed and Block, with every block's output one call away.

Follows timm's contract: forward_features -> forward_head, and forward_intermediates with the signature, defaults and
return conventions of timm's VisionTransformer (timm 1.0), so the state_dict of a ViTEncoder loads into
`timm.models.VisionTransformer(..., num_classes=0, global_pool="token")` with every key matched and the same outputs
(tests/models/test_vit.py).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block

from pipeline.models.pos_embed import interpolate_grid, sincos_2d

POOLS = ("cls", "mean_patch")
# the last block's CLS token before the final norm: the feature MIM-Refiner's evaluation reads (its "cls" of the
# last block), scored next to the normed one
PRENORM = "cls_prenorm"


def init_mae_weights(module: nn.Module) -> None:
    """MAE init: xavier-uniform Linear with zero bias, LayerNorm (1, 0) (facebookresearch/mae models_mae.py)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def pool_split(patches: torch.Tensor, prefix: torch.Tensor, pool: str) -> torch.Tensor:
    """Patch tokens [B, N, D] and the cls token [B, 1, D] (forward_intermediates' split form) -> [B, D]: the cls
    token, or the mean of the patch tokens."""
    if pool == "cls":
        return prefix[:, 0]
    if pool == "mean_patch":
        return patches.mean(dim=1)
    raise ValueError(f"unknown pool {pool!r} (known: {', '.join(POOLS)})")


def pool_tokens(tokens: torch.Tensor, pool: str) -> torch.Tensor:
    """[B, 1+N, D] -> [B, D]: the cls token, or the mean of the patch tokens."""
    return pool_split(tokens[:, 1:], tokens[:, :1], pool)


class ViTEncoder(nn.Module):
    """Vision Transformer encoder with a cls token and fixed 2-D sin-cos positions.

    Inputs of another side (a multiple of the patch: MIM-Refiner's local crops, 96 px for a 224 px model) get the
    position table interpolated bicubically to their grid, as MIM-Refiner does: a crop's token carries the positions
    of the place of the whole image it covers, not those of the image's top-left corner.

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
        grid = int(self.num_patches ** 0.5)
        return tokens + interpolate_grid(self.pos_embed[:, 1:], grid, gh, gw).to(tokens)

    def prepend_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, N, D] -> [B, 1+N, D] with the cls token (its position row is zero)."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def run_blocks(self, tokens: torch.Tensor, keep: list[int], blocks: int | None = None
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the first `blocks` blocks (all by default) on [B, 1+N, D] tokens; return the last output and the
        outputs of blocks `keep`."""
        kept, wanted = [], set(keep)
        for i, blk in enumerate(self.blocks):
            if blocks is not None and i >= blocks:
                break
            tokens = blk(tokens)
            if i in wanted:
                kept.append(tokens)
        return tokens, kept

    def forward_features(self, x: torch.Tensor, norm: bool = True) -> torch.Tensor:
        """Images [B, C, H, W] -> tokens [B, 1+N, D] of the last block, through the final norm unless `norm` is
        False."""
        tokens, _ = self.run_blocks(self.prepend_cls(self.embed_patches(x)), [])
        return self.norm(tokens) if norm else tokens

    def feature(self, x: torch.Tensor, pool: str) -> torch.Tensor:
        """Images -> one pooled feature [B, D]: a pool of `POOLS` of the normed tokens, or `PRENORM`."""
        if pool == PRENORM:
            return self.forward_features(x, norm=False)[:, 0]
        return pool_tokens(self.forward_features(x), pool)

    def forward_head(self, tokens: torch.Tensor, pool: str = "cls") -> torch.Tensor:
        """Normed tokens [B, 1+N, D] -> pooled features [B, D]."""
        return pool_tokens(tokens, pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None,
                              return_prefix_tokens: bool = False, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False
                              ) -> list | tuple[torch.Tensor, list]:
        """Every requested block's output, as timm's VisionTransformer.forward_intermediates returns it.

        Args:
            x: images [B, C, H, W].
            indices: None = every block; an int n = the last n blocks; a list = those blocks (0-based, negative from
                the end). Outputs come in block order whatever the list's order (as timm's).
            return_prefix_tokens: pair each output with its cls token [B, 1, D].
            norm: pass each output through the final norm.
            stop_early: skip the blocks after the last requested one (then the final output is that block's).
            output_fmt: "NCHW" (patch tokens as a [B, D, h, w] map) or "NLC" (patch tokens [B, N, D]).
            intermediates_only: return only the list.
        Returns:
            The list of outputs (each a (patches, cls) pair with return_prefix_tokens), preceded by the normed final
            tokens [B, 1+N, D] unless intermediates_only.
        Raises:
            ValueError: an index outside -depth..depth-1, an int outside 1..depth, or an unknown output_fmt.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt {output_fmt!r} is not NCHW or NLC")
        take = self.block_indices(indices)
        blocks = take[-1] + 1 if stop_early else self.depth
        last, kept = self.run_blocks(self.prepend_cls(self.embed_patches(x)), take, blocks)
        kept = [self.norm(t) for t in kept] if norm else kept
        prefix, patches = [t[:, :1] for t in kept], [t[:, 1:] for t in kept]
        if output_fmt == "NCHW":
            h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
            patches = [t.reshape(t.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous() for t in patches]
        out = list(zip(patches, prefix)) if return_prefix_tokens else patches
        return out if intermediates_only else (self.norm(last), out)

    def block_indices(self, indices: int | list[int] | None) -> list[int]:
        """timm's index convention resolved to ascending 0-based blocks: None = all, n = the last n, a list (negative
        from the end)."""
        if indices is None:
            indices = self.depth
        if isinstance(indices, int):
            if not 0 < indices <= self.depth:
                raise ValueError(f"last-n block count {indices} outside 1..{self.depth}")
            return list(range(self.depth - indices, self.depth))
        take = [i + self.depth if i < 0 else i for i in indices]
        if not take or any(not 0 <= i < self.depth for i in take):
            raise ValueError(f"block indices {list(indices)} must be within -{self.depth}..{self.depth - 1}")
        return sorted(set(take))

    def truncate(self, depth: int) -> None:
        """Keep only the first `depth` blocks (refine.depth); a real cut also drops the final norm (see `final_norm`)."""
        if not 1 <= depth <= self.depth:
            raise ValueError(f"depth {depth} outside 1..{self.depth}")
        if depth < self.depth:
            self.blocks = self.blocks[:depth]
            self.norm = nn.Identity()
            self.depth = depth
            self.arch.update(depth=depth, final_norm=False)
