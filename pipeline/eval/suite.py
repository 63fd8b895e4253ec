"""The frozen-feature protocols run together: k-NN, linear probe, few-shot and k-means."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.eval.clustering import kmeans_scores
from pipeline.eval.fewshot import FEWSHOT_PROTOCOLS, fewshot_accuracy, fewshot_msn
from pipeline.eval.knn import KNN_PROTOCOLS, knn_protocol, protocol_correct
from pipeline.eval.linear import linear_probe
from pipeline.eval.selection import warn_edge_picks
from pipeline.records import fewshot_record
from pipeline.stats import correctness_bits


def knn_protocols(train: dict[str, torch.Tensor], train_y: torch.Tensor, test: dict[str, torch.Tensor],
                  test_y: torch.Tensor, headline: str) -> dict[str, dict]:
    """Every protocol of `KNN_PROTOCOLS` on every pool: train is the bank, test the queries.

    Args:
        train, test: pool -> [N, D] features.
        headline: the protocol whose per-image correctness is kept (what paired comparisons read).
    Returns:
        {protocol: {"k", "temperature", "standardize", "acc": {pool: accuracy 0..1}}}; the headline protocol also
        holds "correct": {pool: `stats.correctness_bits`}.
    """
    out = {}
    for name, p in KNN_PROTOCOLS.items():
        correct = {pool: protocol_correct(train[pool], train_y, test[pool], test_y, p) for pool in train}
        out[name] = {"k": p.k, "temperature": p.temperature, "standardize": p.standardize,
                     "acc": {pool: float(c.float().mean()) for pool, c in correct.items()}}
        if name == headline:
            out[name]["correct"] = {pool: correctness_bits(c.cpu()) for pool, c in correct.items()}
    return out


def frozen_protocols(feats: dict[str, dict[str, torch.Tensor]], labels: dict[str, torch.Tensor],
                     fewshot: dict[int, dict[int, np.ndarray]], num_classes: int, cfg: dict, seed: int,
                     linear: bool = True) -> dict:
    """Every frozen-feature protocol on features of the train, val and test splits.

    Hyperparameters (the linear probe's lr, few-shot C) are chosen on val; test is read once per protocol for its
    number. A pick on the edge of its grid is logged as a WARNING naming the params key to widen.

    Args:
        feats: split -> pool -> [N, D] features, for splits train, val, test and pools cls, mean_patch.
        labels: split -> [N] labels.
        fewshot: shots -> seed -> train indices.
        cfg: the params `evaluate` section (knn_headline, feature, linear, fewshot_headline, fewshot_cs, kmeans).
        linear: run the linear probe on these precomputed features (False: the caller runs the augmented one).
    Returns:
        {"knn": {"headline": name, "protocols": knn_protocols(...)}, "linear": {...}, "fewshot": {...} (the
         headline few-shot protocol's), "fewshot_headline": its name, "fewshot_<other protocol>": {...},
         "kmeans": {...} | None}, accuracies in 0..1; linear and each tuned few-shot entry hold their "selection".
    """
    knn_protocol(cfg["knn_headline"])  # an unknown name fails before the slow protocols
    out: dict = {"knn": {"headline": cfg["knn_headline"],
                         "protocols": knn_protocols(feats["train"], labels["train"], feats["test"], labels["test"],
                                                    cfg["knn_headline"])}}
    pool, lin = cfg["feature"], cfg["linear"]
    split = {s: (feats[s][pool], labels[s]) for s in ("train", "val", "test")}
    if linear:
        out["linear"] = linear_probe(split["train"], split["val"], split["test"], num_classes, lin["lrs"],
                                     lin["epochs"], lin["batch_size"], lin["weight_decay"], seed, "evaluate.linear.lrs")
        out["linear"]["mode"] = "features"
    np_split = {s: (feats[s][pool].cpu().numpy(), labels[s].cpu().numpy()) for s in ("train", "val", "test")}
    protocols = {"tuned": lambda: fewshot_accuracy(np_split["train"], np_split["val"], np_split["test"], fewshot,
                                                   cfg["fewshot_cs"], "evaluate.fewshot_cs"),
                 "msn": lambda: fewshot_msn(np_split["train"], np_split["test"], fewshot)}
    headline = cfg["fewshot_headline"]
    out["fewshot"], out["fewshot_headline"] = protocols[headline](), headline  # the headline keeps its place
    out.update({f"fewshot_{name}": run() for name, run in protocols.items() if name != headline})
    out["kmeans"] = kmeans_scores(*np_split["test"], num_classes, seed) if cfg["kmeans"] else None
    warn_edge_picks(selections(out))
    return out


def selections(result: dict) -> dict[str, dict]:
    """The grid selections of a protocols result, keyed by the metric they serve (linear, fewshot_<shots>)."""
    out = {"linear": result["linear"]["selection"]} if "linear" in result else {}
    out.update({f"fewshot_{shots}": v["selection"] for shots, v in result["fewshot"].items() if "selection" in v})
    return out


def flat_metrics(result: dict) -> dict[str, float]:
    """The headline numbers of a protocols result as one flat dict (what `dvc metrics diff` compares).

    k-NN: knn_<protocol>_<pool> for every protocol, and knn_<pool> for the headline protocol (evaluate.knn_headline).
    """
    knn = result["knn"]
    flat = {f"knn_{pool}": acc for pool, acc in knn["protocols"][knn["headline"]]["acc"].items()}
    flat.update({f"knn_{name}_{pool}": acc for name, p in knn["protocols"].items() for pool, acc in p["acc"].items()})
    flat["linear"] = result["linear"]["test"]
    flat.update({f"fewshot_{k}": v["mean"] for k, v in result["fewshot"].items()})
    for name in FEWSHOT_PROTOCOLS if result.get("fewshot_headline") else ():  # by name too, the headline's twice
        flat.update({f"fewshot_{name}_{k}": v["mean"] for k, v in fewshot_record(result, name).items()})
    if result.get("kmeans"):
        flat.update({f"kmeans_{k}": v for k, v in result["kmeans"].items()})
    if result.get("finetune"):
        flat["finetune"] = result["finetune"]["test"]
    flat.update(result.get("geometry", {}))
    return {k: round(v, 6) for k, v in flat.items()}
