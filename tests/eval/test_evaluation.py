"""The evaluate stage's parts: companions of a refined model.pt and the metrics.json of an evaluation."""
from __future__ import annotations

import torch

from pipeline.eval.evaluation import cluster_head_metrics, companion_encoders, evaluate_metrics
from pipeline.models.vit import ViTEncoder
from pipeline.train.checkpoint import save_checkpoint


def _result(knn: float, cluster_acc: float | None = None) -> dict:
    """A protocols result with the fields flat_metrics reads."""
    out = {"knn": {"headline": "h", "protocols": {"h": {"acc": {"cls": knn}}}}, "linear": {"test": 0.5},
           "fewshot": {"1": {"mean": 0.3}}, "kmeans": {"acc": 0.2}}
    if cluster_acc is not None:
        out["cluster_head"] = {"acc": cluster_acc}
    return out


def test_evaluate_metrics__companions_keep_their_protocols_only_prefixed():
    result = _result(0.61234567, cluster_acc=0.4) | {"online": _result(0.6, cluster_acc=0.35), "control": _result(0.5)}
    metrics = evaluate_metrics(result, ["online", "control"])
    assert metrics["knn_cls"] == 0.612346 and metrics["cluster_head_acc"] == 0.4
    assert metrics["online_knn_cls"] == 0.6 and metrics["online_cluster_head_acc"] == 0.35
    assert metrics["control_fewshot_1"] == 0.3 and "control_kmeans_acc" not in metrics
    assert cluster_head_metrics(_result(0.5)) == {}


def test_companion_encoders__online_from_the_checkpoint_and_the_cut_only_control(tmp_path):
    torch.manual_seed(0)
    full = ViTEncoder(8, 2, 1, 16, 3, 2)
    save_checkpoint(tmp_path / "pretrained.pt", {"arch": full.arch, "encoder": full.state_dict()})
    refined = ViTEncoder(8, 2, 1, 16, 3, 2)
    refined.truncate(2)
    online = ViTEncoder(**refined.arch)
    assert companion_encoders({"arch": refined.arch}, refined, "m.pt", None) == {}
    ckpt = {"arch": refined.arch, "online_encoder": online.state_dict(), "full_depth": 3}
    got = companion_encoders(ckpt, refined, "m.pt", tmp_path / "pretrained.pt")
    assert list(got) == ["online", "control"]
    assert all(torch.equal(a, b) for a, b in zip(got["online"].state_dict().values(), online.state_dict().values()))
    assert got["control"].depth == 2 and torch.equal(got["control"].blocks[1].attn.qkv.weight,
                                                     full.blocks[1].attn.qkv.weight)
    assert list(companion_encoders(ckpt, refined, "m.pt", None)) == ["online"]  # no --pretrained: no control
