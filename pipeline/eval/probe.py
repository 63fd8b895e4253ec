"""Per-block probing: k-NN accuracy of every block's features with its standard error, and the block choice."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from pipeline.data.loader import DeviceImages
from pipeline.data.prepared import Prepared
from pipeline.data.splits import stratified_subset
from pipeline.eval.features import block_features
from pipeline.eval.knn import KnnProtocol, protocol_correct
from pipeline.models.vit import POOLS, ViTEncoder
from pipeline.stats import binomial_se, first_argmax, within_one_se


def probe_blocks(bank: dict[str, torch.Tensor], bank_y: torch.Tensor, query: dict[str, torch.Tensor],
                 query_y: torch.Tensor, protocol: KnnProtocol, chunk_size: int) -> dict[str, list[torch.Tensor]]:
    """k-NN per-query correctness per block for each pooled feature, under one named protocol
    (`knn.KNN_PROTOCOLS`): two models probed on the same queries pair image by image (`curves` gives accuracies).

    Args:
        bank, query: {pool: [L, N, D]} block features of the bank (train) and query (validation) images.
        bank_y, query_y: labels.
    Returns:
        {pool: [L] bool tensors [M]}, block 0 first.
    """
    return {pool: [protocol_correct(bank[pool][b], bank_y, query[pool][b], query_y, protocol, chunk_size).cpu()
                   for b in range(bank[pool].shape[0])]
            for pool in bank}


def curves(correct: dict[str, list[torch.Tensor]]) -> dict[str, list[float]]:
    """{pool: [L] accuracies in 0..1} of probe_blocks' per-query correctness."""
    return {pool: [float(c.float().mean()) for c in blocks] for pool, blocks in correct.items()}


def block_rows(curves: dict[str, list[float]], n_val: int) -> list[dict[str, float]]:
    """One row per block: its accuracy per pool and the binomial standard error of each (`<pool>_se`)."""
    pools = list(curves)
    return [{"block": b, **{pool: curves[pool][b] for pool in pools},
             **{f"{pool}_se": binomial_se(curves[pool][b], n_val) for pool in pools}}
            for b in range(len(curves[pools[0]]))]


def select_block(curve: list[float], n_val: int, rule: str) -> dict:
    """The block whose features start the refinement (heads from it to the last block; or the cut), by `rule`.

    Rules (params probe.select):
        best: the argmax of `curve` (ties -> the shallower block).
        last: the last block.
        one_se: the deepest block whose accuracy is within one binomial standard error of the best,
            sqrt(p (1 - p) / n_val) with p the best accuracy. Blocks in that set are statistically tied with
            the best on this val split, and the argmax among them is noise (MAE's default-run curve is
            67.6 / 68.2 / 67.5 / 66.8 on 5,000 images, SE 0.66). MIM-Refiner places heads from where k-NN
            quality peaks to the last block (docs/methods.md): the blocks after the peak are
            the ones that degrade and need refining. The deepest tied block is the last one still at the
            peak, so heads from it cover the degrading blocks and no block that is as good as the best; it
            also moves only when a deeper block's drop exceeds the noise. (The shallowest tied block would
            add heads on peak blocks, or, with refine.depth: probe, cut blocks that are as good as the best.)
    Args:
        curve: [L] val accuracies, block 0 first; n_val: the validation images behind each.
    Returns:
        {"rule", "block": the chosen 0-based block, "depth": block + 1 (the blocks kept up to it),
         "best_block": the argmax, "se": the best accuracy's SE, "tied_blocks": blocks within one SE of the best,
         "edge": the choice is block 0 or the last block (recorded only: the curve has no wider grid)}.
    """
    best, se, tied = within_one_se(curve, n_val)
    choice = {"best": best, "last": len(curve) - 1, "one_se": tied[-1]}
    if rule not in choice:
        raise ValueError(f"unknown depth rule {rule!r} (known: {', '.join(choice)})")
    block = choice[rule]
    return {"rule": rule, "block": block, "depth": block + 1, "best_block": best, "se": se, "tied_blocks": tied,
            "edge": block in (0, len(curve) - 1)}


def probe_metrics(curves: dict[str, list[float]], choice: dict) -> dict[str, float]:
    """The probe's metrics.json: the chosen depth and block, the number of tied blocks, and per pool the best
    accuracy, its block and the last block's accuracy (no timings: reruns must write identical bytes)."""
    metrics = {"depth": choice["depth"], "block": choice["block"], "n_tied": len(choice["tied_blocks"])}
    for pool in POOLS:
        best = first_argmax(curves[pool])
        metrics.update({f"knn_{pool}_best": round(curves[pool][best], 6), f"knn_{pool}_best_block": best,
                        f"knn_{pool}_last": round(curves[pool][-1], 6)})
    return metrics


def probe_encoder(encoder: ViTEncoder, bank: DeviceImages, query: DeviceImages, protocol: KnnProtocol,
                  batch_size: int, chunk_size: int,
                  autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                  ) -> dict[str, list[torch.Tensor]]:
    """k-NN per-query correctness per block of `encoder` ({pool: [L] bool [M]}; `curves` makes them accuracies)
    under `protocol`, the bank as train, `query` as queries.

    Block features are kept in 16-bit on CUDA (half the memory), float32 on the CPU.
    """
    dtype = torch.float16 if bank.device.type == "cuda" else torch.float32
    bank_f = block_features(encoder, bank, batch_size, dtype, autocast)
    query_f = block_features(encoder, query, batch_size, dtype, autocast)
    return probe_blocks(bank_f, bank.labels, query_f, query.labels, protocol, chunk_size)


def probe_splits(data: Prepared, bank_limit: int, seed: int, device: torch.device) -> tuple[DeviceImages, DeviceImages]:
    """The k-NN bank (train, or a stratified subset of `bank_limit`; 0 = all) and the validation queries."""
    idx = slice(None)
    if bank_limit and bank_limit < data.y["train"].size:
        idx = stratified_subset(data.y["train"], bank_limit, seed)
    stats = (data.card["mean"], data.card["std"], device)
    return DeviceImages(data.x["train"][idx], data.y["train"][idx], *stats), DeviceImages(data.x["val"],
                                                                                          data.y["val"], *stats)
