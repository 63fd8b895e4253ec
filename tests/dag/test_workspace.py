"""The workspace commands behind make run/repro/checkout/remote/push/pull, on a tiny git + DVC project.

One pretrain variant (mae) and one refinement (mae_nna) on digits, run once by the module fixture. The tests then
share it, in order: a run killed with SIGKILL mid-stage and resumed (then a second commit), a checkout of either
commit, and a push to a folder remote pulled into a fresh clone. After each, both tools have nothing to do. A
fourth test, without the project, checks the one-line refusal while another run holds .pipeline.lock.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, copy_project, tiny_params, write_dvc_yaml, write_params
from tests.dag.test_e2e import dvc_stale, snakemake_planned
from tests.dag.test_parity import BIN, tool

REFINED = "results/refine/mae_nna/seed0"
REFINE_STAGE = "refine@mae_nna-0"  # dvc.yaml: a foreach over (refinement, seed) items
STALE_NOTE = "note: removed a stale Snakemake lock left by a killed run (no other run holds .pipeline.lock)"


def workspace(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return tool([sys.executable, "-m", "pipeline.workspace", *args], root, check)


def commit(root: Path, message: str) -> None:
    tool(["git", "add", "-A"], root)
    tool(["git", "commit", "-qm", message], root)


def set_param(root: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[section][key] = value
    write_params(root / "params.yaml", params)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_nothing_to_do(root: Path) -> None:
    assert snakemake_planned(root) == {}
    assert dvc_stale(root) == set()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The tiny project, run once through `workspace run` and committed (refine.epochs = 1). Two cores: the one run
    that may use both (the kill test needs one job at a time)."""
    root = tmp_path_factory.mktemp("workspace") / "project"
    root.mkdir()
    copy_project(root)
    params = tiny_params()
    params["pretrain"]["variants"] = {"mae": params["pretrain"]["variants"]["mae"]}
    params["refine"]["variants"] = {"mae_nna": params["refine"]["variants"]["mae_nna"]}
    write_params(root / "params.yaml", params)
    write_dvc_yaml(root)
    tool(["git", "init", "-q"], root)
    tool(["git", "config", "user.email", "ci@example.invalid"], root)
    tool(["git", "config", "user.name", "ci"], root)
    tool(["dvc", "init", "-q"], root)
    commit(root, "tiny project")
    workspace(root, "run", "--cores", "2")
    commit(root, "run: refine.epochs 1")
    return root


def kill_run_at_first_full_epoch(root: Path, log: Path) -> None:
    """Start `workspace run` in its own process group and SIGKILL the group once refine's full phase has saved
    its first resume checkpoint (epoch 1 of several), as the OOM killer or `kill -9 -<pgid>` would."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(root), "DVC_NO_ANALYTICS": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.workspace", "run", "--cores", "1"], cwd=root,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    checkpoint, deadline = root / REFINED / "resume-full.pt", time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before refine checkpointed:\n{log.read_text()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (root / REFINED / "model.pt").exists(), "killed after refine finished: raise refine.epochs"


def plant_stale_rwlock(root: Path) -> None:
    """What a `dvc repro` killed while refine ran leaves in .dvc/tmp/rwlock: its write entries, with its pid."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    outs = [str((root / REFINED / name).resolve()) for name in ("model.pt", "metrics.json")]
    entry = {"pid": dead.pid, "cmd": "dvc repro"}
    (root / ".dvc/tmp").mkdir(exist_ok=True)
    (root / ".dvc/tmp/rwlock").write_text(json.dumps({"read": {}, "write": {p: entry for p in outs}}))


def test_run__killed_mid_stage_resumes_after_removing_the_stale_lock(project, tmp_path):
    root = project
    set_param(root, "refine", "epochs", 4)
    kill_run_at_first_full_epoch(root, tmp_path / "killed.log")
    assert list((root / ".snakemake/locks").glob("*.lock")), "the killed run left no Snakemake lock"
    # plain snakemake stops on the stale lock; the workspace command removes it and says so in one line
    assert "LockException" in tool(["snakemake", "--cores", "1"], root, check=False).stderr

    rerun = workspace(root, "run", "--cores", "1")
    assert STALE_NOTE in rerun.stderr.splitlines()
    assert not list((root / ".snakemake/locks").glob("*.lock"))
    refine_log = (root / "logs/refine/mae_nna/seed0.log").read_text()
    assert f"resumed from {REFINED}/resume-full.pt at epoch 1" in refine_log

    # an uninterrupted rerun of the stage (`make repro ARGS="-f -s ..."`) writes the same bytes, so DVC finds
    # nothing modified; it runs through the entries a killed `dvc repro` leaves in its rwlock, which DVC drops
    # itself (the pid is dead) with a warning
    resumed = {name: digest(root / REFINED / name) for name in ("model.pt", "metrics.json")}
    plant_stale_rwlock(root)
    forced = workspace(root, "repro", "-f", "-s", REFINE_STAGE)
    assert "had been killed. Auto removed it from the lock file" in forced.stdout + forced.stderr
    assert {name: digest(root / REFINED / name) for name in resumed} == resumed
    assert_nothing_to_do(root)
    commit(root, "run: refine.epochs 4")


def test_run__refused_while_another_run_holds_the_pipeline_lock(tmp_path):
    with (tmp_path / ".pipeline.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for command in (["run"], ["repro"], ["checkout", "HEAD"]):
            proc = subprocess.run([sys.executable, "-m", "pipeline.workspace", *command], cwd=tmp_path,
                                  env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
            assert (proc.returncode, proc.stderr) == (75, "error: another run holds .pipeline.lock in this workspace\n")


def test_checkout__both_tools_agree_at_either_commit(project):
    root = project
    if tool(["git", "rev-list", "--count", "HEAD", "--", "dvc.lock"], root).stdout.strip() == "1":
        # run alone (the kill test made the second results commit): make one from a cheap change
        set_param(root, "analyze", "images", 50)
        workspace(root, "run", "--cores", "1")
        commit(root, "run: analyze.images 50")
    branch = tool(["git", "branch", "--show-current"], root).stdout.strip()
    older = tool(["git", "rev-parse", "HEAD~1"], root).stdout.strip()

    (root / "params.yaml").write_text((root / "params.yaml").read_text() + "\n")
    refused = workspace(root, "checkout", "HEAD~1", check=False)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == ["error: 1 tracked file(s) have uncommitted changes (git status); commit or "
                                           "stash them before checking out HEAD~1"]
    tool(["git", "checkout", "--", "params.yaml"], root)
    first = tool(["git", "rev-list", "--max-parents=0", "HEAD"], root).stdout.strip()  # before any run
    assert workspace(root, "checkout", first, check=False).stderr.splitlines() == [
        f"error: {first} records no results (no dvc.lock there, or no such revision); use git checkout {first} to go "
        f"there without them"]

    workspace(root, "checkout", "HEAD~1")
    assert tool(["git", "rev-parse", "HEAD"], root).stdout.strip() == older
    assert_nothing_to_do(root)
    workspace(root, "checkout", branch)
    assert tool(["git", "branch", "--show-current"], root).stdout.strip() == branch
    assert_nothing_to_do(root)


def test_remote_push_pull__a_fresh_clone_gets_a_finished_dag(project, tmp_path):
    root = project
    missing = workspace(root, "push", check=False)
    assert (missing.returncode, missing.stderr.splitlines()) == (
        1, ["error: no default DVC remote is configured; set one with `make remote [URL=...]`"])
    storage = tmp_path / "storage"
    assert str(storage) in workspace(root, "remote", str(storage)).stdout
    assert f"url = {storage}" in (root / ".dvc/config").read_text()
    commit(root, "DVC remote")
    workspace(root, "push")

    clone = tmp_path / "clone"
    tool(["git", "clone", "-q", str(root), str(clone)], tmp_path)
    workspace(clone, "pull")
    assert digest(clone / REFINED / "model.pt") == digest(root / REFINED / "model.pt")
    assert_nothing_to_do(clone)
    if (clone / "pipeline/compare.py").exists():  # reads both commits' all_metrics.json from git in the clone
        tool([sys.executable, "-m", "pipeline.compare", "HEAD~1", "HEAD", "--no-figure"], clone)
    # else: compare is not in this tree yet, nothing to check

    default = workspace(clone, "remote").stdout  # no URL: a folder beside the repo
    assert str(tmp_path / "clone-dvc-storage") in default
