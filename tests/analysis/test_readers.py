"""The report's readers on a fake results tree (tests/stages/test_report_seeds.py::fake_results)."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.analysis.readers import ResultDirs, read_baseline_spectrum, read_baselines, read_runs, require
from pipeline.errors import DataError
from tests.conftest import tiny_params
from tests.stages.test_report_seeds import fake_results


def _dirs(root: Path) -> ResultDirs:
    r = root / "results"
    return ResultDirs(r / "probe", r / "pretrain", r / "analyze", r / "evaluate", r / "refine", r / "plots",
                      r / "reconstruct")


def test_read_runs__every_model_per_seed_variants_first_with_deltas(tmp_path):
    fake_results(tmp_path, (0, 1))
    p = tiny_params()
    variants, refined = list(p["pretrain"]["variants"]), p["refine"]["variants"]
    runs = read_runs(_dirs(tmp_path), [0, 1], variants, refined)
    assert list(runs) == [0, 1] and list(runs[0]) == [*variants, *refined]
    mae = runs[1]["mae"]
    assert mae["eval"]["knn_cls"] == 0.64 and mae["extra"]["depth"] == 3 and mae["extra"]["dlogamp_fmax_last"] == -5.0
    assert mae["extra"]["hessian_top_eig"] == 101.0
    assert mae["extra"]["recon_loss_last"] == 0.4 and mae["extra"]["recon_best_block"] == 2
    assert list(mae["spectrum"].columns)[0] == "index" and "frequency" in mae
    name = next(n for n, spec in refined.items() if spec["pretrained"] == "mae")
    extra = runs[1][name]["extra"]
    assert extra["d_knn_cls_vs_pretrained"] == pytest.approx(0.1)  # refined models gain 0.1 on their source
    assert extra["d_knn_cls_vs_pretrained_se"] > 0 and "refine_curve" in runs[1][name]


def test_readers__baselines_and_their_spectra_without_a_seed_level(tmp_path):
    fake_results(tmp_path, (0,))
    metrics, details = read_baselines(_dirs(tmp_path))
    assert set(metrics) == set(details) == {"random-init", "pixels"}
    assert len(read_baseline_spectrum(_dirs(tmp_path), "pixels")) == 2


def test_require__a_missing_input_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match="missing input .*metrics.json"):
        require(tmp_path / "metrics.json")
    fake_results(tmp_path, (0,))
    with pytest.raises(DataError, match="seed1"):
        read_runs(_dirs(tmp_path), [0, 1], ["mae"], {})
