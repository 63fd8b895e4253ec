"""Feature extraction: every block's pooled features from one forward pass."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from pipeline import distributed
from pipeline.data.loader import ImageSplit
from pipeline.models.vit import POOLS, PRENORM, ViTEncoder, pool_split, pool_tokens


@torch.no_grad()
def block_features(encoder: ViTEncoder, data: ImageSplit, batch_size: int, dtype: torch.dtype = torch.float32,
                   autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                   ) -> dict[str, torch.Tensor]:
    """Pool each block's raw output (no final norm) as cls and mean-patch, in one pass over `data`.

    Only the pooled [B, D] vectors are kept, so memory is L x N x D per pool in `dtype`, never L x N x T x D.

    Returns:
        {pool: [L, N, D]} for pool in ("cls", "mean_patch").
    """
    encoder.eval()
    out = {p: torch.empty(encoder.depth, len(data), encoder.embed_dim, dtype=dtype, device=data.device)
           for p in POOLS}
    start = 0
    for images, _ in data.batches(batch_size):
        with autocast():
            parts = encoder.forward_intermediates(images, return_prefix_tokens=True, norm=False, output_fmt="NLC",
                                                  intermediates_only=True)  # every block: (patches, cls) each
        for p in POOLS:
            out[p][:, start:start + images.shape[0]] = torch.stack([pool_split(*t, p) for t in parts]).to(dtype)
        start += images.shape[0]
    return out


@torch.no_grad()
def pooled_features(encoder: ViTEncoder, data: ImageSplit, batch_size: int,
                    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                    sharded: bool = False, prenorm: bool = False) -> dict[str, torch.Tensor]:
    """The encoder's final, normed output pooled as cls and mean-patch: {pool: [N, D]} float32; with `prenorm`
    also the last block's CLS token before the final norm (pool `PRENORM`, as MIM-Refiner evaluates).

    sharded: under torchrun, each rank embeds a contiguous 1/world of the rows and every rank receives all of
        them (every rank must call it then).
    """
    encoder.eval()
    n, w = len(data), distributed.world()
    per = -(-n // w.size) if sharded else n
    lo, hi = (min(w.rank * per, n), min((w.rank + 1) * per, n)) if sharded else (0, n)
    out: dict[str, list[torch.Tensor]] = {p: [] for p in (*POOLS, *([PRENORM] if prenorm else []))}
    for images, _ in data.batches(batch_size, lo, hi):
        with autocast():
            raw = encoder.forward_features(images, norm=False)
            tokens = encoder.norm(raw)
        for p in POOLS:
            out[p].append(pool_tokens(tokens, p).float())
        if prenorm:
            out[PRENORM].append(raw[:, 0].float())
    feats = {p: torch.cat(v) if v else torch.empty(0, encoder.embed_dim, device=data.device)
             for p, v in out.items()}
    if not sharded or w.size == 1:
        return feats
    # all_gather needs equal sizes: only the last ranks' shards are short, so the padding ends up after row n
    return {p: distributed.gather(torch.cat([f, f.new_zeros(per - f.shape[0], f.shape[1])]))[:n]
            for p, f in feats.items()}
