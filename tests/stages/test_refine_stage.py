"""The refine stage end to end on digits: full depth with probe-placed heads, the cut-only control, the EMA's
pretrained share, and bad refine params (one line, exit 2, nothing written)."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_stage, write_params
from tests.stages.conftest import error_lines

REFINE = ["--variant", "mae_nna", "--data", "results/data/digits", "--model", "results/pretrain/mae/model.pt",
          "--probe", "results/probe/mae/blocks.json", "--out", "results/refine/mae_nna", "--plots", "results/plots"]
EVALUATE = ["--variant", "mae_nna", "--data", "results/data/digits", "--model", "results/refine/mae_nna/model.pt",
            "--pretrained", "results/pretrain/mae/model.pt", "--out", "results/evaluate/mae_nna",
            "--plots", "results/plots"]


@pytest.fixture
def probed(probed_mae, params):
    params["evaluate"]["linear"].update(epochs=2)
    write_params(probed_mae / "params.yaml", params)
    return probed_mae


def test_refine__full_depth_heads_from_the_probe_and_an_ema_that_caught_up(probed):
    """Default: every block kept, heads from the probe's block to the last, EMA share <= 5%, online weights saved."""
    run_stage("refine", REFINE, probed)
    chosen = json.loads((probed / "results/probe/mae/blocks.json").read_text())["depth"] - 1
    metrics = json.loads((probed / "results/refine/mae_nna/metrics.json").read_text())
    assert metrics["depth"] == 3 and metrics["first_head_block"] == chosen and metrics["heads"] == 3 - chosen
    assert 0 <= metrics["ema_pretrained_share"] <= 0.05
    ckpt = torch.load(probed / "results/refine/mae_nna/model.pt", weights_only=True)
    assert ckpt["head_blocks"] == list(range(chosen, 3)) and set(ckpt["online_encoder"]) == set(ckpt["encoder"])
    assert any(not torch.equal(ckpt["online_encoder"][k], v) for k, v in ckpt["encoder"].items())
    run_stage("evaluate", EVALUATE, probed)
    evaluated = json.loads((probed / "results/evaluate/mae_nna/metrics.json").read_text())
    assert "online_knn_cls" in evaluated and not any(k.startswith("control_") for k in evaluated)
    # the collapse analysis of the embedding too: the last head block's projector output (proj_out wide)
    assert evaluated["embedding_head_block"] == 2 and 1 <= evaluated["embedding_rankme_raw"] <= 32
    assert 0 < metrics["neg_top1_share"] <= metrics["neg_top5_share"] <= 1  # nna: over the batch negatives


def test_refine__a_cut_encoder_is_evaluated_next_to_its_cut_only_control(probed, params):
    """refine.depth: 2 cuts the encoder; evaluate then also reports the pretrained encoder cut at 2 blocks."""
    params["refine"].update(depth=2)
    write_params(probed / "params.yaml", params)
    run_stage("refine", REFINE, probed)
    ckpt = torch.load(probed / "results/refine/mae_nna/model.pt", weights_only=True)
    assert ckpt["arch"]["depth"] == 2 and ckpt["arch"]["final_norm"] is False and ckpt["full_depth"] == 3
    run_stage("evaluate", EVALUATE, probed)
    metrics = json.loads((probed / "results/evaluate/mae_nna/metrics.json").read_text())
    details = json.loads((probed / "results/evaluate/mae_nna/details.json").read_text())
    assert {"control_knn_cls", "control_fewshot_1", "online_knn_cls"} <= set(metrics)
    assert details["control"]["knn"] != details["knn"] and details["test_size"] > 0


def test_refine__cc_writes_its_cluster_head_and_evaluate_scores_it(probed, params):
    """objective: cc end to end: the refined model.pt carries the cluster head, evaluate scores its assignments
    (Hungarian ACC, NMI, ARI) next to k-means on the features."""
    params["refine"]["variants"] = {"mae_cc": {"pretrained": "mae", "objective": "cc"}}
    write_params(probed / "params.yaml", params)
    cc = [a.replace("mae_nna", "mae_cc") for a in REFINE]
    run_stage("refine", cc, probed)
    metrics = json.loads((probed / "results/refine/mae_cc/metrics.json").read_text())
    ckpt = torch.load(probed / "results/refine/mae_cc/model.pt", weights_only=True)
    assert any("cluster" in k for k in ckpt["refiner"]) and 0 < metrics["cluster_entropy"] <= 1
    run_stage("evaluate", [a.replace("mae_nna", "mae_cc") for a in EVALUATE], probed)
    evaluated = json.loads((probed / "results/evaluate/mae_cc/metrics.json").read_text())
    for key in ("cluster_head_acc", "cluster_head_nmi", "online_cluster_head_acc", "kmeans_acc"):
        assert 0 <= evaluated[key] <= 1, key
    assert 1 <= evaluated["cluster_head_used"] <= 10  # digits: cluster_k null = its 10 classes


@pytest.mark.parametrize("change, needle", [
    ({"ema": 0.99, "ema_warmup": False}, "params: refine.ema = 0.99 (ema_warmup False) leaves 92% of the pretrained weights in the refined model after 8 steps"),
    ({"heads": 4}, "params: refine.heads=4 exceeds the 3 blocks that refine.depth='full' keeps (model.depth=3)"),
    ({"heads": 3, "depth": 2}, "params: refine.heads=3 exceeds the 2 blocks that refine.depth=2 keeps"),
    ({"false_negatives": "oracle"}, "params: refine.false_negatives = oracle (variant mae_nna) masks same-class"),
])
def test_refine__bad_refine_params_one_line_and_nothing_written(probed, params, change, needle):
    params["refine"].update(change)
    write_params(probed / "params.yaml", params)
    proc = run_stage("refine", REFINE, probed, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(error_lines(proc)) == 1 and error_lines(proc)[0].startswith(f"error: {needle}")
    assert not (probed / "results/refine").exists()
