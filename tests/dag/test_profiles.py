"""The params profiles a user switches to with one command: each validates and both tools plan the same jobs."""
from __future__ import annotations

import shutil
import sys

import pytest
import yaml

from pipeline import dag
from tests.conftest import REPO, copy_project
from tests.dag.test_e2e import snakemake_planned
from tests.dag.test_parity import dvc_stages, tool


@pytest.mark.parametrize("profile, refinements", [("ablations", 5), ("cpu-long", 2), ("gpu", 5)])
def test_profile__switch_then_both_tools_plan_every_stage(tmp_path, profile, refinements):
    """`make profile P=<name>` (switch + regenerate dvc.yaml) plans the same jobs in Snakemake and DVC."""
    root = copy_project(tmp_path)
    shutil.copytree(REPO / "profiles", root / "profiles")
    tool([sys.executable, "-m", "pipeline.config", "switch", f"profiles/{profile}/params.yaml"], root)
    (root / "dvc.yaml").write_text(tool([sys.executable, "-m", "pipeline.dag"], root).stdout)
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert len(params["refine"]["variants"]) == refinements
    seeds, variants = len(params["seeds"]), len(params["pretrain"]["variants"])
    planned = snakemake_planned(root)
    for name, stage in dag.STAGES.items():
        assert planned[name] == {"variant": variants * seeds, "refined": refinements * seeds, "": 1}[stage.per], name
    tool(["git", "init", "-q"], root)
    tool(["dvc", "init", "-q"], root)
    assert len(dvc_stages(root)) == sum(planned.values())
