"""Masked autoencoder (He et al., arXiv 2111.06377) around a ViTEncoder, with optional MFF fusion.

The model returns tensors only; the loss lives in pipeline.objectives.mae (docs/design.md).
Conventions: in `mask`, 0 is keep and 1 is remove, in the original patch order.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from pipeline import distributed
from pipeline.models.fusion import MultiLevelFusion
from pipeline.models.pos_embed import sincos_2d
from pipeline.models.vit import ViTEncoder, init_mae_weights


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, N, p*p*C], patches in row-major order, each vector ordered (row, col, channel)."""
    b, c, h, w = imgs.shape
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def random_masking(tokens: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep int(N * (1 - mask_ratio)) tokens per sample, chosen by the argsort of uniform noise.

    Args:
        tokens: [B, N, D].
        mask_ratio: fraction removed, in (0, 1).
    Returns:
        kept [B, K, D], mask [B, N] (1 = removed), ids_restore [B, N].
    """
    b, n, d = tokens.shape
    keep = int(n * (1 - mask_ratio))
    noise = distributed.rand(b, n, device=tokens.device, generator=generator)  # per sample, any process count
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    kept = torch.gather(tokens, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
    mask = torch.ones(b, n, device=tokens.device)
    mask[:, :keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


def add_decoder(module: nn.Module, encoder: ViTEncoder, decoder_embed_dim: int, decoder_depth: int,
                decoder_num_heads: int, mlp_ratio: float) -> None:
    """Give `module` MAE's light decoder for `encoder`'s tokens, under the official MAE names (mask_token,
    decoder_embed, decoder_pos_embed, decoder_blocks, decoder_norm, decoder_pred): MaskedAutoencoder and the
    per-block decoders of the reconstruction probe (BlockDecoder) are built by this one function."""
    p, c = encoder.patch_size, encoder.arch["in_chans"]
    grid = encoder.arch["img_size"] // p
    module.decoder_embed = nn.Linear(encoder.embed_dim, decoder_embed_dim)
    module.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
    module.register_buffer("decoder_pos_embed", sincos_2d(decoder_embed_dim, grid, grid, cls_token=True))
    norm = partial(nn.LayerNorm, eps=1e-6)
    module.decoder_blocks = nn.ModuleList(
        Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm)
        for _ in range(decoder_depth))
    module.decoder_norm = norm(decoder_embed_dim)
    module.decoder_pred = nn.Linear(decoder_embed_dim, p * p * c)
    for m in (module.decoder_embed, module.decoder_blocks, module.decoder_norm, module.decoder_pred):
        init_mae_weights(m)
    nn.init.normal_(module.mask_token, std=0.02)


def decode(module: nn.Module, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """MAE's decoder (built by add_decoder on `module`): latent [B, 1+K, D] of the visible tokens -> per-patch
    pixel predictions [B, N, p*p*C], mask tokens at the removed places, cls output dropped."""
    x = module.decoder_embed(latent)
    b, n = ids_restore.shape
    masks = module.mask_token.expand(b, n - (x.shape[1] - 1), -1)
    x_ = torch.cat([x[:, 1:], masks], dim=1)
    x_ = torch.gather(x_, 1, ids_restore[..., None].expand(-1, -1, x.shape[2]))
    x = torch.cat([x[:, :1], x_], dim=1) + module.decoder_pos_embed
    for blk in module.decoder_blocks:
        x = blk(x)
    return module.decoder_pred(module.decoder_norm(x))[:, 1:]


class MaskedAutoencoder(nn.Module):
    """MAE (or MFF-MAE when `fuse_blocks` is given) with a light transformer decoder.

    Args:
        encoder: the ViT encoder; its weights are what downstream stages keep.
        decoder_embed_dim, decoder_depth, decoder_num_heads: decoder size.
        mlp_ratio: decoder MLP ratio.
        fuse_blocks: [] for plain MAE, else the MFF block list (ending with the last block).
        fusion: "softmax" (learned MFF weights) or "mean" (fixed uniform weights).
    """

    def __init__(self, encoder: ViTEncoder, decoder_embed_dim: int, decoder_depth: int, decoder_num_heads: int,
                 mlp_ratio: float = 4.0, fuse_blocks: list[int] | tuple[int, ...] = (), fusion: str = "softmax"):
        super().__init__()
        self.encoder = encoder
        if fusion not in ("softmax", "mean"):
            raise ValueError(f"unknown fusion {fusion!r} (known: softmax, mean)")
        self.fusion = (MultiLevelFusion(encoder.embed_dim, list(fuse_blocks), learnable=fusion == "softmax")
                       if fuse_blocks else None)
        add_decoder(self, encoder, decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, N, p*p*C] in the order the decoder predicts."""
        return patchify(imgs, self.encoder.patch_size)

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches. Returns latent [B, 1+K, D], mask [B, N], ids_restore [B, N]."""
        enc = self.encoder
        kept, mask, ids_restore = random_masking(enc.embed_patches(imgs), mask_ratio, generator)
        keep = self.fusion.blocks if self.fusion is not None else []
        last, feats = enc.run_blocks(enc.prepend_cls(kept), keep)
        latent = self.fusion(feats) if self.fusion is not None else last
        return enc.norm(latent), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Latent [B, 1+K, D] -> per-patch pixel predictions [B, N, p*p*C] (cls output dropped)."""
        return decode(self, latent, ids_restore)

    def forward(self, imgs: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, C, H, W] -> (pred [B, N, p*p*C], mask [B, N])."""
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, generator)
        return self.forward_decoder(latent, ids_restore), mask

    def fusion_weights(self) -> list[float]:
        """The MFF softmax weights per fused block, or [] for plain MAE."""
        return [] if self.fusion is None else self.fusion.weights().tolist()


@dataclass(frozen=True)
class ModelSpec:
    """params `model` (params.schema.yaml has each key), typed: the encoder's and the decoder's sizes."""

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    decoder_embed_dim: int
    decoder_depth: int
    decoder_num_heads: int

    @classmethod
    def from_params(cls, cfg: dict) -> ModelSpec:
        """The spec of params `model`, its values as the params file gives them (they go into model.pt's arch)."""
        return cls(**{f.name: cfg[f.name] for f in fields(cls)})

    def encoder(self, img_size: int, in_chans: int) -> ViTEncoder:
        """A freshly initialized encoder for square images of side `img_size` with `in_chans` channels."""
        return ViTEncoder(img_size, self.patch_size, in_chans, self.embed_dim, self.depth, self.num_heads,
                          self.mlp_ratio)

    def autoencoder(self, encoder: ViTEncoder, fuse_blocks: list[int], fusion: str) -> MaskedAutoencoder:
        """MAE (or MFF-MAE with `fuse_blocks`) around `encoder`, with a freshly initialized decoder."""
        return MaskedAutoencoder(encoder, self.decoder_embed_dim, self.decoder_depth, self.decoder_num_heads,
                                 self.mlp_ratio, fuse_blocks, fusion)


class BlockDecoder(nn.Module):
    """A fresh MAE decoder on one encoder block's output (MIM-Refiner's per-block reconstruction probe): a new
    LayerNorm (the encoder's final norm is tuned to the last block only), then add_decoder's decoder."""

    def __init__(self, encoder: ViTEncoder, decoder_embed_dim: int, decoder_depth: int, decoder_num_heads: int,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.norm = nn.LayerNorm(encoder.embed_dim, eps=1e-6)
        add_decoder(self, encoder, decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio)

    def forward(self, tokens: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Block output of the visible tokens [B, 1+K, D] -> pixel predictions [B, N, p*p*C]."""
        return decode(self, self.norm(tokens), ids_restore)
