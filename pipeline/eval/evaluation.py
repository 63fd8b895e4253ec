"""What the evaluate stage measures of one encoder: the frozen protocols (and a cc refinement's cluster head), the
same protocols on its companions (a refined model's online encoder and cut-only control), the collapse analysis of
its feature (and of a refined model's embedding), and the metrics.json that sums them up."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.data.loader import ImageSplit
from pipeline.eval.clustering import cluster_head_scores
from pipeline.eval.collapse import collapse_analysis, embedding_metrics
from pipeline.eval.features import pooled_features
from pipeline.eval.linear_augmented import augmented_linear_probe
from pipeline.eval.selection import warn_edge_picks
from pipeline.eval.suite import flat_metrics, frozen_protocols
from pipeline.models.heads import ClusterHead
from pipeline.models.refined import saved_head_embedding
from pipeline.models.vit import ViTEncoder
from pipeline.train import device as rt
from pipeline.train.checkpoint import load_encoder, load_module_state

# the metrics of the online encoder and the cut-only control kept in metrics.json (details.json has them all)
COMPANION_METRICS = ("knn", "linear", "fewshot", "cluster_head")


@dataclass(frozen=True)
class Evaluation:
    """The frozen-feature evaluation of encoders on the splits of one dataset with params `evaluate` (`cfg`).

    Under torchrun every rank embeds its shard of each split; only rank 0 (`main`) runs the protocols and gets
    results (the other ranks get {}).
    """

    splits: dict[str, ImageSplit]
    fewshot: dict[int, dict[int, np.ndarray]]  # shots -> seed -> indices into splits["train"]
    num_classes: int
    cfg: dict
    seed: int
    device: torch.device
    precision: str
    main: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        return rt.autocast(self.device, self.precision)

    def protocols(self, model: ViTEncoder, cluster_head: ClusterHead | None = None) -> dict:
        """The frozen protocols of `model` (`frozen_protocols`), and `cluster_head`'s scores on test if given."""
        model.to(self.device)
        feats = {s: pooled_features(model, d, self.cfg["batch_size"], self.autocast, sharded=True, prenorm=True)
                 for s, d in self.splits.items()}
        if not self.main:
            return {}
        labels = {s: d.labels for s, d in self.splits.items()}
        augmented = self.cfg["linear"]["mode"] == "augmented"
        out = frozen_protocols(feats, labels, self.fewshot, self.num_classes, self.cfg, self.seed,
                               linear=not augmented)
        if augmented:  # MIM-Refiner's probe: the encoder sees augmented crops, a grid of features
            out["linear"] = augmented_linear_probe(model, self.splits, self.num_classes, self.cfg["linear"],
                                                   self.cfg["batch_size"], self.seed, self.autocast)
            warn_edge_picks({"linear": out["linear"]["selection"]})
        if cluster_head is not None:
            out["cluster_head"] = cluster_head_scores(cluster_head.to(self.device), feats["test"]["cls"],
                                                      labels["test"])
        return out

    def collapse(self, encoder: ViTEncoder, ckpt: dict, source: str) -> tuple[dict, list[dict]]:
        """The collapse analysis of `encoder`'s evaluated feature on val (params evaluate.geometry); for a refined
        model.pt (`ckpt` holds "refiner") also of its embedding, where its loss acts: the last head's projector
        output.

        Returns:
            ({"geometry": scalars (the embedding's prefixed embedding_*), "embedding_spectrum": its spectrum rows
              (refined models only)}, the feature's spectrum rows).
        """
        geo = self.cfg["geometry"]

        def embed(images: torch.Tensor) -> torch.Tensor:
            with self.autocast():
                return encoder.feature(images, self.cfg["feature"])

        def collapse(fn) -> tuple[dict, list[dict]]:
            return collapse_analysis(fn, self.splits["val"], geo["images"], geo["crop_scale_min"],
                                     self.cfg["batch_size"], self.seed)

        out: dict = {}
        out["geometry"], spectrum = collapse(embed)
        if "refiner" in ckpt:
            head_embed, block = saved_head_embedding(ckpt, source)
            with self.autocast():
                scalars, rows = collapse(head_embed)
            out["geometry"] |= embedding_metrics(scalars) | {"embedding_head_block": block}
            out["embedding_spectrum"] = rows
        return out, spectrum


def companion_encoders(ckpt: dict, encoder: ViTEncoder, source: str, pretrained: Path | None
                       ) -> dict[str, ViTEncoder]:
    """The encoders evaluated next to a refined model's: "online" (the encoder it trained, model.pt's
    online_encoder) and, when refinement cut the encoder, "control" (the `pretrained` model.pt cut at the same
    depth, not trained). Empty for a pretrained model."""
    companions = {}
    if "online_encoder" in ckpt:
        companions["online"] = ViTEncoder(**ckpt["arch"])
        load_module_state(companions["online"], ckpt["online_encoder"], f"{source}:online_encoder")
    if pretrained is not None and ckpt.get("full_depth", encoder.depth) > encoder.depth:
        control, _ = load_encoder(pretrained)
        control.truncate(encoder.depth)
        companions["control"] = control
    return companions


def cluster_head_metrics(result: dict) -> dict[str, float]:
    """cluster_head_<score> of a protocols result that scored a cc refinement's cluster head (empty otherwise)."""
    return {f"cluster_head_{k}": round(v, 6) for k, v in result.get("cluster_head", {}).items()}


def evaluate_metrics(result: dict, companions: list[str]) -> dict[str, float]:
    """metrics.json of an evaluation: the headline numbers (`flat_metrics`) and the cluster head's, then each
    companion's of `COMPANION_METRICS`, prefixed with its name (online_knn_cls)."""
    return flat_metrics(result) | cluster_head_metrics(result) | {
        f"{name}_{k}": v for name in companions
        for k, v in (flat_metrics(result[name]) | cluster_head_metrics(result[name])).items()
        if k.startswith(COMPANION_METRICS)}
