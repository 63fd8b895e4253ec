"""Fixtures and argv shared by the stage tests."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import write_params


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


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]
