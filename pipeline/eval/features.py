"""Feature extraction: every block's pooled features from one forward pass."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from pipeline.data.loader import DeviceImages
from pipeline.models.vit import POOLS, ViTEncoder, pool_tokens


@torch.no_grad()
def block_features(encoder: ViTEncoder, data: DeviceImages, batch_size: int, dtype: torch.dtype = torch.float32,
                   autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                   ) -> dict[str, torch.Tensor]:
    """Pool each block's raw output (no final norm) as cls and mean-patch, in one pass over `data`.

    Only the pooled [B, D] vectors are kept, so memory is L x N x D per pool in `dtype`, never L x N x T x D.

    Returns:
        {pool: [L, N, D]} for pool in ("cls", "mean_patch").
    """
    encoder.eval()
    blocks = list(range(encoder.depth))
    out = {p: torch.empty(encoder.depth, len(data), encoder.embed_dim, dtype=dtype, device=data.images.device)
           for p in POOLS}
    start = 0
    for images, _ in data.batches(batch_size):
        with autocast():
            tokens = encoder.forward_intermediates(images, blocks, norm=False)
        for p in POOLS:
            out[p][:, start:start + images.shape[0]] = torch.stack([pool_tokens(t, p) for t in tokens]).to(dtype)
        start += images.shape[0]
    return out


@torch.no_grad()
def pooled_features(encoder: ViTEncoder, data: DeviceImages, batch_size: int,
                    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                    ) -> dict[str, torch.Tensor]:
    """The encoder's final, normed output pooled as cls and mean-patch: {pool: [N, D]} float32."""
    encoder.eval()
    out: dict[str, list[torch.Tensor]] = {p: [] for p in POOLS}
    for images, _ in data.batches(batch_size):
        with autocast():
            tokens = encoder.forward_features(images)
        for p in POOLS:
            out[p].append(pool_tokens(tokens, p).float())
    return {p: torch.cat(v) for p, v in out.items()}
