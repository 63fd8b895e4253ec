"""Training seeds as a DAG dimension: a new seed adds its own jobs only, the three-seed profile plans, bad seeds stop.

The two-seed DAG is checked job by job against DVC in test_parity.py (its fixture runs one and two seeds).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, RULES, copy_project, tiny_params, write_dvc_yaml, write_params
from tests.dag.test_e2e import snakemake_planned
from tests.dag.test_parity import dvc_stages, tool

REFINED = 5  # tiny_params: five refinements of two pretrain variants
PER_SEED = {"pretrain": 2, "probe": 2, "reconstruct": 2, "analyze": 2, "evaluate": 2, "refine": REFINED,
            "probe_refined": REFINED, "evaluate_refined": REFINED}


def _project(root: Path, seeds: list[int]) -> Path:
    params = tiny_params()
    params["seeds"] = seeds
    copy_project(root)
    write_params(root / "params.yaml", params)
    write_dvc_yaml(root)
    return root


def _set_seeds(root: Path, seeds: list[int]) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["seeds"] = seeds
    write_params(root / "params.yaml", params)


def test_adding_a_seed__plans_only_its_jobs_and_the_report_in_both_tools(tmp_path):
    """Seed 0 recorded as done by both tools (placeholder outputs, no training), then seeds [0] -> [0, 1]."""
    root = _project(tmp_path, [0])
    tool(["git", "init", "-q"], root)
    tool(["dvc", "init", "-q"], root)
    for stage in dvc_stages(root).values():
        for out in stage["outs"]:
            (root / out).parent.mkdir(parents=True, exist_ok=True)
            (root / out).write_text(f"{out}\n")
    tool(["dvc", "commit", "-f", "-q"], root)
    tool(["snakemake", "--touch", "--cores", "1"], root)
    assert snakemake_planned(root) == {}
    assert json.loads(tool(["dvc", "status", "--json"], root).stdout) == {}

    _set_seeds(root, [0, 1])
    write_dvc_yaml(root)  # as make run / make repro do: refine's items list the seeds
    assert snakemake_planned(root) == {**PER_SEED, "report": 1}
    stale = set(json.loads(tool(["dvc", "status", "--json"], root).stdout))
    seed1 = {name for name in (s["name"] for s in dvc_stages(root).values()) if name.endswith("-1")}
    assert len(seed1) == sum(PER_SEED.values())
    assert stale == seed1 | {"report"}


def test_seeds3_profile__snakemake_plans_three_runs_of_every_training_stage(tmp_path):
    root = copy_project(tmp_path)
    shutil.copytree(REPO / "profiles", root / "profiles")
    tool([sys.executable, "-m", "pipeline.config", "switch", "profiles/seeds3/params.yaml"], root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["seeds"] == [0, 1, 2]
    variants, refined = len(params["pretrain"]["variants"]), len(params["refine"]["variants"])
    planned = snakemake_planned(root)
    for name, (per, _) in RULES.items():
        runs = {"variant": variants, "refined": refined, "": 1}[per] * (3 if per else 1)
        assert planned[name] == runs, name
    # DVC plans the same jobs from the dvc.yaml that `make profile` writes
    write_dvc_yaml(root)
    tool(["git", "init", "-q"], root)
    tool(["dvc", "init", "-q"], root)
    names = [s["name"] for s in dvc_stages(root).values()]
    assert len(names) == sum(planned.values())
    assert {n.rpartition("-")[2] for n in names if "@" in n} == {"0", "1", "2"}


@pytest.mark.parametrize("seeds", [[], [1, 1]], ids=["empty", "duplicate"])
def test_bad_seeds__one_line_naming_the_key_and_exit_2_everywhere(tmp_path, seeds):
    root = _project(tmp_path, [0])
    _set_seeds(root, seeds)
    for cmd in ([sys.executable, "-m", "pipeline.config", "check"], ["snakemake", "-n", "--cores", "1"],
                [sys.executable, "-m", "pipeline.dvc_yaml"],
                [sys.executable, "-m", "pipeline.stages.pretrain", "--variant", "mae", "--seed", "1", "--data",
                 "results/data/digits", "--out", "results/pretrain/mae/seed1", "--plots", "results/plots"]):
        proc = tool(cmd, root, check=False)
        assert proc.returncode == 2, (cmd, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("error: params: seeds = ") and len([x for x in lines if "error" in x]) == 1, cmd
