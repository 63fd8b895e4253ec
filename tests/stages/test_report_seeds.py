"""report over two training seeds: fake per-seed outputs in, mean, sample std and n per model out."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_stage, tiny_params, write_params

SHOTS = ("1", "2")
KNN = {0: 0.60, 1: 0.64}  # mae's test k-NN per seed: mean 0.62, sample std 0.04 / sqrt(2)
NO_EDGE = {"key": "evaluate.linear.lrs", "edge": False}  # a val pick inside its grid


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


def _evaluation(root: Path, name: str, seed: int | None, knn: float) -> None:
    """metrics.json, details.json and the spectrum CSV of one evaluated model (seed None: the baselines' layout)."""
    out = root / "results/evaluate" / name / (f"seed{seed}" if seed is not None else "")
    fewshot = {k: {"runs": [knn - 0.1, knn - 0.2], "mean": knn - 0.15, "std": 0.07, "c": 10.0,
                   "selection": NO_EDGE} for k in SHOTS}
    _write(out / "metrics.json", {"knn_cls": knn, "knn_mean_patch": knn, "linear": knn + 0.1, "fewshot_1": knn - 0.15,
                                  "fewshot_2": knn - 0.15, "kmeans_acc": 0.3})
    _write(out / "details.json", {"fewshot": fewshot, "linear": {"selection": NO_EDGE}, "test_size": 1000})
    csv = root / "results/plots/spectrum" / (f"{name}/seed{seed}.csv" if seed is not None else f"{name}.csv")
    _write(csv, "index,log10_singular_value_raw,log10_singular_value_centred,log10_singular_value_standardized\n"
                "0,0.0,0.0,0.0\n1,-1.0,-1.0,-0.5\n")


def _blocks(knn: float) -> list[dict]:
    return [{"block": b, "cls": knn - 0.05 * (2 - b), "mean_patch": knn} for b in range(3)]


def fake_results(root: Path, seeds: tuple[int, ...]) -> None:
    """Every file report reads, for tiny_params' models and `seeds` (refined models gain 0.1 on mae)."""
    p = tiny_params()
    for seed in seeds:
        for v in p["pretrain"]["variants"]:
            knn = KNN[seed] if v == "mae" else 0.5
            _write(root / f"results/pretrain/{v}/seed{seed}/metrics.json", {"loss": 0.7, "fusion_weights": {}})
            _write(root / f"results/probe/{v}/seed{seed}/blocks.json", {"rows": _blocks(knn), "depth": 3,
                                                                         "val_size": 300})
            _write(root / f"results/analyze/{v}/seed{seed}/frequency.json", {"high_frequency": [-3.0, -4.0, -5.0],
                                                                              "last_block_amplitude": [1.0, 0.2]})
            _write(root / f"results/analyze/{v}/seed{seed}/hessian.json", {"top_eigenvalue": 100.0 + seed})
            _write(root / f"results/reconstruct/{v}/seed{seed}/blocks.json", {"rows": [
                {"block": b, "loss": loss, "se": 0.01, "train_loss": loss} for b, loss in enumerate((0.5, 0.45, 0.4))]})
            _write(root / f"results/analyze/{v}/seed{seed}/frequency.csv",
                   "block,relative_depth,frequency,frequency_label,dlog_amplitude,amplitude\n"
                   "0,0.33,0,0,0,1.0\n0,0.33,1,π,-3,0.2\n")
            _evaluation(root, v, seed, knn)
        for name in p["refine"]["variants"]:
            knn = KNN[seed] + 0.1
            _write(root / f"results/refine/{name}/seed{seed}/metrics.json", {
                "depth": 3, "first_head_block": 2, "ema_pretrained_share": 0.01, "nn_accuracy": 0.5,
                "pos_mass": 0.1})
            _write(root / f"results/plots/refine_curve/{name}/seed{seed}.csv",
                   "phase,loss,neg_top1_share,neg_top5_share,epoch\n0,4.0,0.1,0.3,1\n1,3.5,0.12,0.35,2\n")
            _write(root / f"results/probe/{name}/seed{seed}/blocks.json", {"rows": _blocks(knn), "depth": 3,
                                                                            "val_size": 300})
            _evaluation(root, name, seed, knn)
    base = {name: {"knn_cls": 0.3, "linear": 0.4, "fewshot_1": 0.2, "fewshot_2": 0.25} for name in ("random-init",
                                                                                                   "pixels")}
    _write(root / "results/evaluate/baselines/metrics.json", base)
    fewshot = {k: {"runs": [0.2, 0.25], "mean": 0.225, "std": 0.03, "c": 10.0, "selection": NO_EDGE} for k in SHOTS}
    _write(root / "results/evaluate/baselines/details.json", {
        "random-init": {"blocks": _blocks(0.3), "fewshot": fewshot, "linear": {"selection": NO_EDGE}},
        "pixels": {"fewshot": fewshot, "linear": {"selection": NO_EDGE}}})
    for name in ("random-init", "pixels"):
        _write(root / f"results/plots/spectrum/{name}.csv",
               "index,log10_singular_value_raw,log10_singular_value_centred,log10_singular_value_standardized\n"
               "0,0.0,0.0,0.0\n1,-0.3,-0.3,-0.1\n")


REPORT_ARGS = ["--probe", "results/probe", "--pretrain", "results/pretrain", "--analyze", "results/analyze",
               "--evaluate", "results/evaluate", "--refine", "results/refine", "--plots", "results/plots",
               "--reconstruct", "results/reconstruct", "--out", "results/report"]


def test_report__two_seeds_give_mean_sample_std_and_n(tmp_path):
    params = tiny_params()
    params["seeds"] = [0, 1]
    write_params(tmp_path / "params.yaml", params)
    fake_results(tmp_path, (0, 1))
    run_stage("report", REPORT_ARGS, tmp_path)
    table = pd.read_csv(tmp_path / "results/report/summary.csv").set_index("model")
    assert table.loc["mae", "knn_cls"] == pytest.approx(0.62)
    assert table.loc["mae", "knn_cls_std"] == pytest.approx(0.04 / math.sqrt(2), abs=1e-6)
    assert table.loc["mae", "n"] == 2 and table.loc["mae_nna", "knn_cls"] == pytest.approx(0.72)
    assert table.loc["pixels", "n"] == 1 and math.isnan(table.loc["pixels", "knn_cls_std"])
    metrics = json.loads((tmp_path / "results/report/all_metrics.json").read_text())
    assert metrics["mae"]["knn_cls"] == pytest.approx(0.62) and metrics["mae"]["n"] == 2
    assert metrics["mae"]["knn_cls_std"] == pytest.approx(0.04 / math.sqrt(2), abs=1e-6)
    assert "knn_cls_std" not in metrics["pixels"]  # one run: no std, and metrics.json holds no NaN
    assert all(isinstance(v, (int, float)) for m in metrics.values() for v in m.values())
    # the few-shot noise of one run for pipeline.compare: the standard error over the fixed splits
    assert metrics["pixels"]["fewshot_1_split_se"] == pytest.approx(0.025, rel=1e-4)  # runs 0.2, 0.25
    # the DVC metrics file: the headline metrics only, the same numbers
    headline = json.loads((tmp_path / "results/report/metrics.json").read_text())
    assert headline["mae"] == {k: metrics["mae"][k] for k in ("knn_cls", "linear", "fewshot_1", "val_knn_best")}
    md = (tmp_path / "results/report/summary.md").read_text()
    assert "| mae | 62.0 ± 2.8 |" in md
    assert (tmp_path / "results/report/knn_blocks.png").stat().st_size > 10_000


def test_report__a_seed_that_did_not_run_is_a_one_line_error(tmp_path):
    params = tiny_params()
    params["seeds"] = [0, 1]
    write_params(tmp_path / "params.yaml", params)
    fake_results(tmp_path, (0,))
    proc = run_stage("report", REPORT_ARGS, tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: report: missing input results/pretrain/mae/seed1/")
