"""Snakefile and dvc.yaml describe the same DAG: same jobs, commands, deps, outs and params keys."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.deps import code_files
from tests.conftest import REPO, RULES, copy_project, rule_params, tiny_params, write_dvc_yaml, write_params

BIN = Path(sys.executable).parent
LOG_REDIRECT = " > {log} 2>&1"


def tool(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(cwd), "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module", params=[[0], [0, 1]], ids=["one-seed", "two-seeds"])
def project(request, tmp_path_factory) -> Path:
    """The project with the tiny two-variant params and one or two training seeds, as a git + DVC repo."""
    root = copy_project(tmp_path_factory.mktemp("parity"))
    params = tiny_params()
    params["seeds"] = request.param
    write_params(root / "params.yaml", params)
    write_dvc_yaml(root)  # as make run / make repro do
    tool(["git", "init", "-q"], root)
    tool(["dvc", "init", "-q"], root)
    return root


def snakemake_jobs(root: Path) -> dict[str, dict]:
    """Jobs keyed by command (log redirect removed), parsed from `snakemake -n -p --forceall`."""
    text = tool(["snakemake", "-n", "-p", "--forceall", "--cores", "1"], root).stdout
    jobs: dict[str, dict] = {}
    for block in text.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        fields = dict(line.strip().split(": ", 1) for line in block.splitlines()[1:]
                      if line.startswith("    ") and ": " in line)
        if rule == "all":
            continue
        cmd = block.split("Shell command: ", 1)[1].splitlines()[0]
        cmd = cmd.replace(LOG_REDIRECT.format(log=fields["log"]), "")
        jobs[cmd] = {"rule": rule, "outs": set(fields["output"].split(", ")), "deps": set(fields["input"].split(", "))}
    return jobs


def dvc_stages(root: Path) -> dict[str, dict]:
    """Stages keyed by command, from DVC's own parse of dvc.yaml (matrix and foreach expanded)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    stages = {}
    with Repo(str(root)) as repo:
        for st in repo.index.stages:
            params = [k for d in st.deps if isinstance(d, ParamsDependency) for k in d.params]
            stages[st.cmd] = {"name": st.name, "outs": {o.def_path for o in st.outs}, "params": params,
                              "deps": {d.def_path for d in st.deps if not isinstance(d, ParamsDependency)}}
    return stages


def rule_of(dvc_name: str) -> str:
    """The rule of an expanded DVC stage name: `refine@mae_nna-0` -> `refine`, `pretrain-mae@mae-0` -> `pretrain`."""
    return dvc_name.split("@")[0].split("-")[0]


def test_dvc_yaml__is_written_from_the_rules():
    proc = subprocess.run([sys.executable, "-m", "pipeline.dvc_yaml", "--check"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_dvc_yaml__a_stale_file_is_named_with_the_command_that_rewrites_it(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["seeds"] = [*params["seeds"], 7]
    write_params(project / "params.yaml", params)
    try:
        proc = tool([sys.executable, "-m", "pipeline.dvc_yaml", "--check"], project, check=False)
    finally:
        params["seeds"].pop()
        write_params(project / "params.yaml", params)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: dvc.yaml is out of date with rules/ and params.yaml: run `make dvc.yaml`"]


def test_dvc_yaml__each_rule_is_one_stage_in_dvc_idiom(project):
    """A matrix over the wildcards' params keys where DVC can express it; a foreach over (refinement, seed) items
    where a rule's paths name the refinement's source."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert list(stages) == list(RULES)
    for rule in ("pretrain", "probe", "analyze", "evaluate"):
        assert stages[rule]["matrix"] == {"variant": "${pretrain.variants}", "seed": "${seeds}"}, rule
    assert stages["probe_refined"]["matrix"] == {"refined": "${refine.variants}", "seed": "${seeds}"}
    for rule in ("refine", "evaluate_refined"):
        items = stages[rule]["foreach"]
        assert items["mff_nna-0"] == {"refined": "mff_nna", "seed": "0", "pretrained": "mff"}, rule
        assert "results/pretrain/${item.pretrained}/seed${item.seed}/model.pt" in stages[rule]["do"]["deps"]
    assert "${data.dataset}" in stages["prepare"]["cmd"]


def test_parity__same_jobs_commands_outs_and_deps(project):
    smk, dvc = snakemake_jobs(project), dvc_stages(project)
    assert set(smk) == set(dvc), "commands differ between Snakemake and DVC"
    seeds = yaml.safe_load((project / "params.yaml").read_text())["seeds"]
    refined = ("mae_nna", "mff_nna", "mae_nnclr", "mae_moco", "mae_mochi")
    assert sorted(s["name"] for s in dvc.values()) == sorted(
        ["prepare", "baselines", "report"]
        + [f"{stage}@{v}-{s}" for stage in ("pretrain", "probe", "reconstruct", "analyze", "evaluate")
           for v in ("mae", "mff")
           for s in seeds]
        + [f"{stage}@{r}-{s}" for stage in ("refine", "probe_refined", "evaluate_refined") for r in refined
           for s in seeds])
    for cmd, stage in dvc.items():
        job = smk[cmd]
        assert job["rule"] == rule_of(stage["name"])
        assert job["outs"] == stage["outs"], stage["name"]
        assert job["deps"] == stage["deps"], stage["name"]


def test_parity__dvc_params_are_the_keys_each_stage_declares(project):
    for stage in dvc_stages(project).values():
        variant = stage["name"].partition("@")[2].rpartition("-")[0]  # <stage>@<variant>-<seed>
        declared = [k.replace("{variant}", variant) for k in rule_params(rule_of(stage["name"]))]
        assert stage["params"] == declared, stage["name"]
        assert "seeds" not in declared or not variant, f"{stage['name']}: a new seed would rerun it"


def test_code_deps__cover_every_pipeline_module_a_stage_imports():
    """Each stage module imported in a fresh interpreter (in parallel: each loads torch) pulls in no pipeline file
    that its rule does not list."""
    modules = sorted({module for _, module in RULES.values()})
    probe = ("import sys, importlib; importlib.import_module(sys.argv[1]); print('\\n'.join(sorted(m.__file__ for m "
             "in list(sys.modules.values()) if getattr(m, '__name__', '').startswith('pipeline') "
             "and getattr(m, '__file__', None))))")
    procs = {m: subprocess.Popen([sys.executable, "-c", probe, f"pipeline.stages.{m}"], cwd=REPO, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for m in modules}
    for module, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        imported = {str(Path(f).relative_to(REPO)) for f in out.split()}
        declared = set(code_files(f"pipeline.stages.{module}"))
        assert imported <= declared, f"{module}: undeclared {imported - declared}"


def test_snakemake__lint_and_dry_run_pass_on_the_repo_params(tmp_path):
    root = copy_project(tmp_path)
    lint = tool(["snakemake", "--lint"], root)
    assert "Congratulations" in lint.stdout + lint.stderr
    out = tool(["snakemake", "-n", "--cores", "2"], root).stdout
    assert "prepare" in out and "pretrain" in out and "report" in out


@pytest.mark.parametrize("override", [["--config", "seed=1"], ["--configfile", str(REPO / "profiles/gpu/params.yaml")]],
                         ids=["config", "configfile"])
def test_snakemake_overrides__refused_with_one_line(project, override):
    # DVC never sees a Snakemake override, so honouring it would make the two tools run different experiments
    proc = tool(["snakemake", "-n", "--cores", "1", *override], project, check=False)
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "params.yaml" in errors[0] and "dvc exp run -S" in errors[0]
