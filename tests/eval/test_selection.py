"""Selections on val: the grid pick, its edge flag and warning, a one-value grid."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from pipeline.eval.selection import grid_pick, warn_edge_picks
from pipeline.eval.suite import flat_metrics, frozen_protocols, selections
from tests.conftest import run_stage, tiny_params, write_params


def test_grid_pick__best_at_the_largest_value_is_an_edge():
    # n=100: SE of 0.7 is 0.0458, and 0.6 is not within it: the curve still rises at the grid's end
    sel = grid_pick({0.01: 0.5, 0.1: 0.6, 1.0: 0.7}, "evaluate.linear.lrs", 100)
    assert (sel["pick"], sel["best"], sel["edge"], sel["grid"]) == (1.0, 1.0, True, [0.01, 0.1, 1.0])
    assert grid_pick({0.01: 0.9, 0.1: 0.6, 1.0: 0.7}, "k", 100)["edge"]  # the smallest value is an edge too
    inside = grid_pick({1.0: 0.7, 0.01: 0.5, 0.1: 0.8}, "k", 100)
    assert (inside["pick"], inside["edge"], inside["val"]) == (0.1, False, [0.5, 0.8, 0.7])
    assert grid_pick({0.1: 0.5, 1.0: 0.7}, "k", 100)["edge"]  # two values: no interior, the best is an edge


def test_grid_pick__a_plateau_at_the_end_is_no_edge():
    # the default run's 1-shot curve is flat in C: the argmax at an end is val noise (SE 0.0069 on n=5000)
    sel = grid_pick({0.1: 0.3814, 1.0: 0.3817, 10.0: 0.3803, 100.0: 0.3823}, "evaluate.fewshot_cs", 5000)
    assert sel["best"] == 100.0 and sel["tied"] == [0.1, 1.0, 10.0, 100.0] and not sel["edge"]
    assert grid_pick({0.1: 0.3814, 1.0: 0.3817, 10.0: 0.3803, 100.0: 0.3823}, "k", 10**9)["edge"]  # no noise


def test_grid_pick__one_se_takes_the_smallest_value_tied_with_the_best():
    # best 0.452 at C=100 on n=1000: SE = sqrt(0.452 * 0.548 / 1000) = 0.01574; 0.45 (C=10) is within it
    scores = {0.1: 0.30, 1.0: 0.40, 10.0: 0.45, 100.0: 0.452, 1000.0: 0.451}
    sel = grid_pick(scores, "evaluate.fewshot_cs", 1000, "one_se")
    assert sel["se"] == pytest.approx(math.sqrt(0.452 * 0.548 / 1000))
    assert sel["tied"] == [10.0, 100.0, 1000.0] and (sel["pick"], sel["edge"]) == (10.0, False)
    assert grid_pick(scores, "evaluate.fewshot_cs", 1000, "argmax")["pick"] == 100.0


def test_grid_pick__a_single_value_is_no_selection():
    with pytest.raises(ValueError, match="evaluate.linear.lrs: a selection needs at least two grid values"):
        grid_pick({1.0: 0.7}, "evaluate.linear.lrs", 100)


def test_warn_edge_picks__logs_the_key_to_widen(caplog):
    edge = grid_pick({0.01: 0.5, 0.1: 0.6, 1.0: 0.7}, "evaluate.linear.lrs", 100)
    inside = grid_pick({1.0: 0.5, 10.0: 0.6, 100.0: 0.55}, "evaluate.fewshot_cs", 100)
    with caplog.at_level(logging.WARNING, logger="pipeline.eval.selection"):
        lines = warn_edge_picks({"linear": edge, "fewshot_1": inside})
    assert lines == ["linear: val accuracy is best at 1, the largest value of evaluate.linear.lrs [0.01, 0.1, 1], and "
                     "no interior value is within one standard error of it; the optimum may lie beyond: widen "
                     "evaluate.linear.lrs"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING] and caplog.records[0].getMessage() == lines[0]


def _blob_split(n_per_class, seed, classes=3, dim=6):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    f = 3 * torch.eye(classes, dim)[y] + 0.5 * torch.randn(len(y), dim, generator=g)
    return {"cls": f, "mean_patch": f + 0.1}, y


def test_frozen_protocols__edge_pick_recorded_and_warned(caplog):
    feats, labels = {}, {}
    for i, s in enumerate(("train", "val", "test")):
        feats[s], labels[s] = _blob_split(20, i)
    cfg = tiny_params()["evaluate"]
    cfg["linear"].update(lrs=[1.0e-7, 0.1], epochs=5, batch_size=16)  # 1e-7 does not move the head: 0.1 wins
    fewshot = {1: {0: np.array([0, 20, 40])}}
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="pipeline.eval.selection"):
        out = frozen_protocols(feats, labels, fewshot, 3, cfg, seed=0)
    assert selections(out)["linear"]["edge"] and selections(out)["linear"]["pick"] == 0.1
    assert any("widen evaluate.linear.lrs" in r.getMessage() for r in caplog.records)
    flat = flat_metrics(out)
    assert {"knn_cls", "knn_mean_patch", "knn_mim_refiner_cls", "knn_mim_refiner_mean_patch", "knn_dino_cls",
            "knn_dino_mean_patch"} <= set(flat)
    headline = cfg["knn_headline"]
    assert flat["knn_cls"] == flat[f"knn_{headline}_cls"] and out["knn"]["headline"] == headline


def test_stage__one_value_grid_is_one_line_and_exit_2(tmp_path):
    params = tiny_params()
    params["evaluate"]["linear"]["lrs"] = [0.1]
    write_params(tmp_path / "params.yaml", params)
    proc = run_stage("evaluate", ["--variant", "mae", "--data", "results/data/digits", "--model", "missing.pt",
                                  "--out", "results/evaluate/mae", "--plots", "results/plots"], tmp_path, check=False)
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        "error: params: evaluate.linear.lrs = [0.1]: [0.1] is too short"]
