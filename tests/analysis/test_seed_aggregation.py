"""Aggregation over training seeds: mean, sample std and n of every metric, checked by hand."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from pipeline.analysis.seeds import aggregate, aggregate_table, markdown_with_spread
from pipeline.analysis.summary import markdown_table


def test_aggregate__two_fake_metric_files_give_mean_sample_std_and_n(tmp_path):
    for seed, (knn, linear) in enumerate([(0.60, 0.70), (0.64, 0.75)]):
        (tmp_path / f"seed{seed}.json").write_text(json.dumps({"knn_cls": knn, "linear": linear}))
    runs = [json.loads((tmp_path / f"seed{s}.json").read_text()) for s in (0, 1)]
    stats = aggregate(runs)
    assert stats["knn_cls"]["mean"] == pytest.approx(0.62)
    # sample std of two values a, b is |a - b| / sqrt(2)
    assert stats["knn_cls"]["std"] == pytest.approx(0.04 / math.sqrt(2))
    assert stats["linear"]["std"] == pytest.approx(0.05 / math.sqrt(2))
    assert stats["knn_cls"]["n"] == stats["linear"]["n"] == 2


def test_aggregate__one_seed_has_no_std_and_keeps_ints():
    stats = aggregate([{"depth": 6, "knn": 0.5}])
    assert stats["depth"] == {"mean": 6, "std": stats["depth"]["std"], "n": 1} and isinstance(stats["depth"]["mean"], int)
    assert math.isnan(stats["depth"]["std"]) and math.isnan(stats["knn"]["std"])


def test_aggregate__skips_names_flags_and_nan_counting_only_numbers():
    stats = aggregate([{"objective": "nna", "edge": True, "k": 1.0}, {"objective": "nna", "edge": False,
                                                                       "k": float("nan")}, {"k": 3.0}])
    assert set(stats) == {"k"} and stats["k"]["n"] == 2 and stats["k"]["mean"] == 2.0


def _seed_table(knn: float, depth: int) -> pd.DataFrame:
    return pd.DataFrame([{"model": "mae", "knn_cls": knn, "depth": depth, "objective": float("nan")},
                         {"model": "mae_nna", "knn_cls": knn + 0.1, "depth": depth, "objective": "nna"},
                         {"model": "pixels", "knn_cls": 0.3, "depth": float("nan"), "objective": float("nan")}])


def test_aggregate_table__means_then_n_then_stds_baselines_once():
    table = aggregate_table([_seed_table(0.6, 6), _seed_table(0.7, 4)], single=("pixels",))
    assert list(table.columns) == ["model", "knn_cls", "depth", "objective", "n", "knn_cls_std", "depth_std"]
    rows = table.set_index("model")
    assert rows.loc["mae", "knn_cls"] == pytest.approx(0.65) and rows.loc["mae", "n"] == 2
    assert rows.loc["mae", "knn_cls_std"] == pytest.approx(0.1 / math.sqrt(2))
    assert rows.loc["mae", "depth"] == 5 and rows.loc["mae", "depth_std"] == pytest.approx(math.sqrt(2))
    assert rows.loc["mae_nna", "objective"] == "nna"
    assert rows.loc["pixels", "n"] == 1 and math.isnan(rows.loc["pixels", "knn_cls_std"])


def test_aggregate_table__a_metric_missing_in_a_seed_gets_its_own_n():
    first, second = _seed_table(0.6, 6), _seed_table(0.7, 4)
    second.loc[0, "knn_cls"] = float("nan")
    rows = aggregate_table([first, second]).set_index("model")
    assert rows.loc["mae", "knn_cls_n"] == 1 and rows.loc["mae", "knn_cls"] == pytest.approx(0.6)
    assert rows.loc["mae_nna", "knn_cls_n"] == 2


def test_markdown_with_spread__mean_plus_minus_std_in_points_and_n():
    table = aggregate_table([_seed_table(0.6, 6), _seed_table(0.7, 4)], single=("pixels",))
    lines = markdown_with_spread(table, markdown_table).splitlines()
    assert lines[0] == "| model | knn_cls | depth | objective | n |"
    assert lines[2] == "| mae | 65.0 ± 7.1 | 5 ± 1.414 |  | 2 |"
    assert lines[3].startswith("| mae_nna | 75.0 ± 7.1 |") and lines[3].endswith("| nna | 2 |")
    assert lines[4] == "| pixels | 30.0 |  |  | 1 |"
