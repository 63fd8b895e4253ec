"""The GPU path's settings exercised on CPU (issue 20): `runtime.compile: on` (torch.compile of the MAE forward)
and `runtime.precision: bf16` (autocast) through pretrain, probe, refine (NNA and MoCo) and evaluate, each
against the fp32 eager run of the same params. CUDA-only pieces (fused AdamW, GPU-resident batches) are listed in
docs/results.md; they cannot run here."""
from __future__ import annotations

import json
import math

import pytest

from tests.conftest import run_stage, write_params
from tests.stages.conftest import PRETRAIN, PROBE

# bf16 keeps 8 bits of mantissa: a two-epoch MAE loss moves by about 1% (measured 0.3-0.6% on digits)
BF16_LOSS_RTOL = 0.05
REFINE = {objective: ["--variant", f"mae_{objective}", "--data", "results/data/digits", "--model",
                      "results/pretrain/mae/model.pt", "--probe", "results/probe/mae/blocks.json", "--out",
                      f"results/refine/mae_{objective}", "--plots", "results/plots"] for objective in ("nna", "moco")}
EVALUATE = ["--variant", "mae_nna", "--data", "results/data/digits", "--model", "results/refine/mae_nna/model.pt",
            "--pretrained", "results/pretrain/mae/model.pt", "--out", "results/evaluate/mae_nna",
            "--plots", "results/plots"]


@pytest.fixture
def lean(params):
    params["evaluate"]["linear"].update(epochs=1, mode="augmented")  # the GPU profile's probe
    params["evaluate"]["finetune"].update(epochs=0)
    params["refine"]["variants"] = {"mae_nna": {"pretrained": "mae", "objective": "nna"},
                                    "mae_moco": {"pretrained": "mae", "objective": "moco"}}
    return params


def test_compile_and_bf16__pretrain_within_tolerance_of_fp32_eager_then_probe_refine_evaluate(work, lean, trained_mae):
    """One compiled bf16 chain: its pretraining loss against the fp32 eager run of the same params (the session's
    trained mae), then probe, NNA and MoCo refinement and evaluate with finite metrics."""
    eager = json.loads((trained_mae / "results/pretrain/mae/metrics.json").read_text())["loss"]
    lean["runtime"].update(compile="on", precision="bf16")
    write_params(work / "params.yaml", lean)
    run_stage("pretrain", PRETRAIN, work)
    compiled = json.loads((work / "results/pretrain/mae/metrics.json").read_text())["loss"]
    assert math.isfinite(compiled) and compiled == pytest.approx(eager, rel=BF16_LOSS_RTOL)
    run_stage("probe", PROBE, work)
    for objective, argv in REFINE.items():
        run_stage("refine", argv, work)
        metrics = json.loads((work / f"results/refine/mae_{objective}/metrics.json").read_text())
        assert all(math.isfinite(metrics[k]) for k in ("loss", "nn_accuracy", "knn")), (objective, metrics)
    run_stage("evaluate", EVALUATE, work)
    evaluated = json.loads((work / "results/evaluate/mae_nna/metrics.json").read_text())
    assert all(math.isfinite(evaluated[k]) for k in ("knn_cls", "linear", "fewshot_1", "rankme_raw"))
    assert evaluated["knn_cls"] > 0.3  # digits: ten classes, chance 0.1
    linear = json.loads((work / "results/evaluate/mae_nna/details.json").read_text())["linear"]
    assert linear["mode"] == "augmented" and len(linear["grid"]) == 4
