"""Fixtures and argv shared by the stage tests."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_stage, tiny_params, write_params


@pytest.fixture
def work(tmp_path, params, digits_dir) -> Path:
    """A work dir with the tiny params and the prepared digits linked in."""
    write_params(tmp_path / "params.yaml", params)
    (tmp_path / "results" / "data").mkdir(parents=True)
    (tmp_path / "results" / "data" / "digits").symlink_to(digits_dir)
    return tmp_path


PRETRAIN = ["--variant", "mae", "--data", "results/data/digits", "--out", "results/pretrain/mae",
            "--plots", "results/plots"]
PROBE = ["--variant", "mae", "--data", "results/data/digits", "--model", "results/pretrain/mae/model.pt",
         "--out", "results/probe/mae", "--plots", "results/plots"]


@pytest.fixture(scope="session")
def trained_mae(tmp_path_factory, digits_dir) -> Path:
    """The tiny params' mae pretrained and probed once per test run: the stage tests that start from a trained
    encoder copy it instead of training their own (the pretrain and probe stages have their own tests)."""
    work = tmp_path_factory.mktemp("trained")
    write_params(work / "params.yaml", tiny_params())
    (work / "results" / "data").mkdir(parents=True)
    (work / "results" / "data" / "digits").symlink_to(digits_dir)
    run_stage("pretrain", PRETRAIN, work)
    run_stage("probe", PROBE, work)
    return work


def _copy_outputs(src: Path, dest: Path, paths: tuple[str, ...]) -> None:
    for rel in paths:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (src / rel).is_dir() else shutil.copy2
        copy(src / rel, dest / rel)


@pytest.fixture
def pretrained(work, trained_mae) -> Path:
    """`work` with the session's pretrained mae (what `pretrain` writes under the tiny params)."""
    _copy_outputs(trained_mae, work, ("results/pretrain/mae", "results/plots/pretrain_curve/mae.csv"))
    return work


@pytest.fixture
def probed_mae(pretrained, trained_mae) -> Path:
    """`work` with the session's pretrained and probed mae."""
    _copy_outputs(trained_mae, pretrained, ("results/probe/mae", "results/plots/knn_blocks/mae.csv"))
    return pretrained


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]
