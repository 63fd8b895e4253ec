"""profiles/slurm: `snakemake --workflow-profile profiles/slurm -n` plans the DAG as SLURM jobs with their resources.

The dry run needs the SLURM executor plugin but no SLURM binaries and no fakes of them: with -n nothing is submitted,
and the plugin only runs `which sacct` and `which squeue` (when it is imported). To check that the resource names are
ones the plugin turns into sbatch options, the resources each job gets in the dry run are fed to the plugin's own
sbatch command builder.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

from tests.conftest import REPO, RULES, copy_project, rule_params, tiny_params, write_params
from tests.dag.test_parity import tool

PROFILE = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
GPU_RULES = ("pretrain", "refine", "probe", "reconstruct", "probe_refined", "evaluate", "evaluate_refined", "analyze",
             "baselines")
CPU_RULES = ("prepare", "report")  # rules/common.smk gives every other stage one GPU when runtime.device is not cpu
SIZED = ("runtime", "mem_mb", "cpus_per_task")  # every job must carry these three
# resources the plugin turns into sbatch options (snakemake_executor_plugin_slurm: submit_string.py, utils.py)
SBATCH_NAMES = {*SIZED, "slurm_account", "slurm_partition", "constraint", "qos", "gpu", "gpu_model", "gres",
                "cpus_per_gpu", "mem_mb_per_cpu", "nodes", "tasks", "tasks_per_gpu", "slurm_extra", "clusters"}


class _Resources(dict):
    """A job's resources as the plugin reads them: `.get(name)` and `.name`."""

    __getattr__ = dict.__getitem__


@pytest.fixture
def project(tmp_path) -> Path:
    root = copy_project(tmp_path)
    shutil.copytree(REPO / "profiles", root / "profiles")
    return root


def dry_run(root: Path, device: str, nproc: int = 1) -> dict[str, list[dict]]:
    """Rule -> the resources of each of its jobs, parsed from the profile's dry run with `runtime.device`."""
    params = tiny_params()
    params["runtime"].update(device=device, nproc=nproc)
    write_params(root / "params.yaml", params)
    out = tool(["snakemake", "--workflow-profile", "profiles/slurm", "-n"], root).stdout
    jobs: dict[str, list[dict]] = {}
    for block in out.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        line = next(x for x in block.splitlines() if x.strip().startswith("resources: "))
        pairs = (kv.split("=", 1) for kv in line.split("resources: ", 1)[1].split(", "))
        jobs.setdefault(rule, []).append({k: int(v) if v.isdigit() else v for k, v in pairs})
    jobs.pop("all", None)
    return jobs


def sbatch(rule: str, resources: dict) -> str:
    """The sbatch options the plugin would submit this job with (account and partition left to the cluster)."""
    job = SimpleNamespace(name=rule, threads=1, resources=_Resources(resources))
    params = {"run_uuid": "test", "slurm_logfile": "slurm.log", "comment_str": rule, "account": "",
              "partition": "", "workdir": ""}
    return get_submit_command(job, params) + set_gres_string(job)


def test_slurm_profile__sizes_every_rule_and_only_names_rules_of_the_dag():
    assert set(PROFILE["default-resources"]) >= set(SIZED), "default-resources must size every rule"
    for rule in GPU_RULES:
        assert set(SIZED) <= set(PROFILE["set-resources"].get(rule, {})), f"{rule} falls back to default-resources"
    # an unknown resource name is passed on silently and never reaches sbatch
    for rule, res in [("default", PROFILE["default-resources"]), *PROFILE["set-resources"].items()]:
        assert set(res) <= SBATCH_NAMES, f"{rule}: {set(res) - SBATCH_NAMES} mean nothing to the SLURM plugin"
    # Snakemake ignores set-resources of a rule it does not know, so a misspelt name would go unnoticed
    assert set(PROFILE["set-resources"]) <= set(RULES)


def test_slurm_profile__dry_run_gives_each_job_its_gpu_cpus_memory_and_runtime(project):
    jobs = dry_run(project, "cuda")
    per = {"variant": 2, "refined": 5, "": 1}  # tiny_params: two pretrain variants, five refinements
    assert {rule: len(js) for rule, js in jobs.items()} == {name: per[kind] for name, (kind, _) in RULES.items()}
    for rule, js in jobs.items():
        want = {**PROFILE["default-resources"], **PROFILE["set-resources"].get(rule, {})}
        gpus = 0 if rule in CPU_RULES else 1
        for res in js:
            assert {k: res[k] for k in (*SIZED, "gpu")} == {**{k: want[k] for k in SIZED}, "gpu": gpus}, rule
            call = sbatch(rule, res)
            assert f" -t {want['runtime']} " in call and f" --mem {want['mem_mb']} " in call, call
            assert f" --cpus-per-task={want['cpus_per_task']}" in call, call
            assert ("--gpus=1" in call) == bool(gpus), call


def test_slurm_profile__torchrun_stages_ask_for_nproc_gpus(project):
    jobs = dry_run(project, "cuda", nproc=4)
    for rule, js in jobs.items():
        gpus = 0 if rule in CPU_RULES else 4 if "runtime.nproc" in rule_params(rule) else 1
        assert {res["gpu"] for res in js} == {gpus}, rule
        assert (f"--gpus={gpus}" in sbatch(rule, js[0])) == bool(gpus)
    assert jobs["pretrain"][0]["gpu"] == jobs["evaluate_refined"][0]["gpu"] == 4 and jobs["probe"][0]["gpu"] == 1


def test_slurm_profile__cpu_device_asks_for_no_gpu(project):
    jobs = dry_run(project, "cpu")
    assert all(res["gpu"] == 0 and "--gpus" not in sbatch(rule, res) for rule, js in jobs.items() for res in js)


def test_slurm_profile__selects_the_slurm_executor(project):
    # the plugin validates its own settings only when it is the executor; these two flags contradict each other
    write_params(project / "params.yaml", tiny_params())
    proc = tool(["snakemake", "--workflow-profile", "profiles/slurm", "-n", "--slurm-requeue", "--slurm-no-requeue"],
                project, check=False)
    assert proc.returncode != 0 and "mutually exclusive" in proc.stdout + proc.stderr
