"""The frozen-feature protocols run together: k-NN, linear probe, few-shot and k-means."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.eval.clustering import kmeans_scores
from pipeline.eval.fewshot import fewshot_accuracy
from pipeline.eval.knn import knn_accuracy
from pipeline.eval.linear import linear_probe


def frozen_protocols(feats: dict[str, dict[str, torch.Tensor]], labels: dict[str, torch.Tensor],
                     fewshot: dict[int, dict[int, np.ndarray]], num_classes: int, cfg: dict, seed: int) -> dict:
    """Every frozen-feature protocol on features of the train, val and test splits.

    Hyperparameters (the linear probe's lr) are chosen on val; test is read once per protocol for its number.

    Args:
        feats: split -> pool -> [N, D] features, for splits train, val, test and pools cls, mean_patch.
        labels: split -> [N] labels.
        fewshot: shots -> seed -> train indices.
        cfg: the params `evaluate` section (k, temperature, feature, linear, fewshot_cs, kmeans).
    Returns:
        {"knn": {pool: acc}, "linear": {...}, "fewshot": {...}, "kmeans": {...} | None}, accuracies in 0..1.
    """
    out: dict = {"knn": {pool: knn_accuracy(feats["train"][pool], labels["train"], feats["test"][pool],
                                            labels["test"], cfg["k"], cfg["temperature"])
                         for pool in feats["train"]}}
    pool, lin = cfg["feature"], cfg["linear"]
    split = {s: (feats[s][pool], labels[s]) for s in ("train", "val", "test")}
    out["linear"] = linear_probe(split["train"], split["val"], split["test"], num_classes, lin["lrs"], lin["epochs"],
                                 lin["batch_size"], lin["weight_decay"], seed)
    np_split = {s: (feats[s][pool].cpu().numpy(), labels[s].cpu().numpy()) for s in ("train", "val", "test")}
    out["fewshot"] = fewshot_accuracy(np_split["train"], np_split["val"], np_split["test"], fewshot, cfg["fewshot_cs"])
    out["kmeans"] = kmeans_scores(*np_split["test"], num_classes, seed) if cfg["kmeans"] else None
    return out


def flat_metrics(result: dict) -> dict[str, float]:
    """The headline numbers of a protocols result as one flat dict (what `dvc metrics diff` compares)."""
    flat = {f"knn_{pool}": acc for pool, acc in result["knn"].items()}
    flat["linear"] = result["linear"]["test"]
    flat.update({f"fewshot_{k}": v["mean"] for k, v in result["fewshot"].items()})
    if result.get("kmeans"):
        flat.update({f"kmeans_{k}": v for k, v in result["kmeans"].items()})
    if result.get("finetune"):
        flat["finetune"] = result["finetune"]["test"]
    flat.update(result.get("geometry", {}))
    return {k: round(v, 6) for k, v in flat.items()}
