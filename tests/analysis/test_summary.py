"""The comparison table: both k-NN protocols as columns, edge picks marked with the key to widen."""
from __future__ import annotations

import pytest

from pipeline.analysis.summary import EDGE_MARK, markdown_table, summary_table


def _selection(key, grid, pick):
    return {"key": key, "grid": grid, "pick": pick, "edge": pick in (grid[0], grid[-1])}


def _details(lr, c_by_shots):
    lrs, cs = [0.01, 0.1, 1.0], [1.0, 10.0, 100.0]
    return {"linear": {"selection": _selection("evaluate.linear.lrs", lrs, lr)},
            "fewshot": {s: {"selection": _selection("evaluate.fewshot_cs", cs, c)} for s, c in c_by_shots.items()}}


def _metrics(knn):
    return {"knn_cls": knn, "knn_mean_patch": knn, "knn_mim_refiner_cls": knn, "knn_mim_refiner_mean_patch": knn,
            "knn_dino_cls": knn - 0.05, "knn_dino_mean_patch": knn - 0.05, "linear": 0.7, "fewshot_1": 0.3,
            "fewshot_2": 0.4}


def _table(mae_details, baseline_details=None):
    blocks = [{"block": 0, "cls": 0.6, "mean_patch": 0.6}, {"block": 1, "cls": 0.7, "mean_patch": 0.6}]
    models = {"mae": {"eval": _metrics(0.7), "blocks": blocks, "details": mae_details, "extra": {"depth": 2}}}
    baselines = {"random-init": _metrics(0.5), "pixels": _metrics(0.8)}
    return summary_table(models, blocks, baselines, baseline_details)


def test_summary_table__both_knn_protocols_follow_the_headline():
    table = _table(_details(0.1, {"1": 10.0, "2": 10.0}))
    assert list(table.columns[:7]) == ["model", "knn_cls", "knn_mean_patch", "knn_dino_cls", "knn_dino_mean_patch",
                                       "knn_mim_refiner_cls", "knn_mim_refiner_mean_patch"]
    assert "edge_picks" not in table and EDGE_MARK not in markdown_table(table)


def test_markdown_table__marks_edge_picks_and_names_the_key():
    inner = _details(0.1, {"1": 10.0, "2": 10.0})
    table = _table(_details(1.0, {"1": 10.0, "2": 100.0}), {"random-init": inner, "pixels": _details(0.1, {"1": 1.0})})
    row = table.set_index("model").loc["mae"]
    assert row["edge_picks"] == "linear (widen evaluate.linear.lrs); fewshot_2 (widen evaluate.fewshot_cs)"
    lines = {line.split(" | ")[0][2:]: line.split(" | ") for line in markdown_table(table).splitlines()[2:]}
    cols = list(table.columns)
    assert lines["mae"][cols.index("linear")] == f"70.0{EDGE_MARK}"
    assert lines["mae"][cols.index("fewshot_2")] == f"40.0{EDGE_MARK}"
    assert lines["mae"][cols.index("fewshot_1")] == "30.0"
    assert lines["pixels"][cols.index("fewshot_1")] == f"30.0{EDGE_MARK}"
    assert EDGE_MARK not in " ".join(lines["random-init"][:cols.index("edge_picks")])


def test_summary__the_linear_probe_mode_is_a_label_and_msn_columns_follow_the_headline_few_shot():
    """linear_probe says how the linear number was made (a string, never formatted as a percentage), and the
    protocols' few-shot columns (fewshot_msn_<k>) sit after the headline's, ordered by shots."""
    from pipeline.analysis.summary import summary_markdown

    details = _details(0.1, {"1": 10.0, "2": 10.0})
    details["linear"].update(mode="augmented", feature="cls_mean_last4")
    blocks = [{"block": 0, "cls": 0.6, "mean_patch": 0.6}]
    eval_ = {**_metrics(0.7), "fewshot_msn_2": 0.45, "fewshot_msn_1": 0.35}
    table = summary_table({"mae": {"eval": eval_, "blocks": blocks, "details": details, "extra": {}}}, blocks,
                          {"random-init": _metrics(0.5), "pixels": _metrics(0.8)})
    few = [c for c in table.columns if c.startswith("fewshot_")]
    assert few == ["fewshot_1", "fewshot_2", "fewshot_msn_1", "fewshot_msn_2"]
    assert table.set_index("model").loc["mae", "linear_probe"] == "augmented: cls_mean_last4"
    line = next(row for row in markdown_table(table).splitlines() if row.startswith("| mae"))
    assert "| augmented: cls_mean_last4 |" in line
    summary_markdown(table.assign(n=1))  # renders whole
    details["linear"].update(mode="features")
    assert _table(details).set_index("model").loc["mae", "linear_probe"] == "features"


def test_split_se__every_few_shot_protocol_gets_its_split_columns():
    from pipeline.analysis.summary import split_se

    details = {"fewshot_headline": "tuned", "fewshot": {"1": {"mean": 0.3, "runs": [0.2, 0.4]}},
               "fewshot_msn": {"1": {"mean": 0.5, "runs": [0.4, 0.6]}}}
    # the standard error of the mean of two runs 0.2 apart: sample std 0.1414 / sqrt(2) = 0.1
    assert split_se(details) == pytest.approx({"fewshot_1_split0": 0.2, "fewshot_1_split1": 0.4,
                                               "fewshot_1_split_se": 0.1, "fewshot_msn_1_split0": 0.4, "fewshot_msn_1_split1": 0.6,
                                               "fewshot_msn_1_split_se": 0.1})
