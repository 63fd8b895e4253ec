"""Shared fixtures: a tiny params file on scikit-learn's digits and a prepared copy of it."""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


# The DAG's rules (rules/*.smk, in DAG order): what each runs once per ("variant": pretrain variant, "refined":
# refinement, each times the seeds; "": once) and the stage module its command runs.
RULES = {"prepare": ("", "prepare"), "pretrain": ("variant", "pretrain"), "probe": ("variant", "probe"),
         "reconstruct": ("variant", "reconstruct"), "probe_refined": ("refined", "probe"), "refine": ("refined", "refine"), "analyze": ("variant", "analyze"),
         "evaluate": ("variant", "evaluate"), "evaluate_refined": ("refined", "evaluate"),
         "baselines": ("", "baselines"), "report": ("", "report")}


def rule_params(rule: str) -> tuple[str, ...]:
    """The params keys a rule's stage module declares (its PARAMS tuple)."""
    from pipeline.deps import stage_params_keys

    return stage_params_keys(f"pipeline.stages.{RULES[rule][1]}")


def write_dvc_yaml(root: Path) -> None:
    """dvc.yaml of `root`, written from its rules and params as `make dvc.yaml` does."""
    subprocess.run([sys.executable, "-m", "pipeline.dvc_yaml"], cwd=root, check=True, capture_output=True,
                   env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})


def tiny_params() -> dict:
    """params.yaml shrunk to digits (8x8), a 3-block ViT with 2x2 patches, 2 epochs, two pretrain variants and
    five refinements (NNA of each, and the NNCLR, MoCo and MoCHi ablations of MAE)."""
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["runtime"].update(device="cpu", threads=1)
    p["data"].update(dataset="digits", val_size=300, train_limit=0, test_limit=0, fewshot_shots=[1, 2],
                     fewshot_seeds=[0, 1])
    p["model"].update(patch_size=2, embed_dim=32, depth=3, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
                      decoder_num_heads=2)
    p["pretrain"].update(epochs=2, warmup_epochs=1, batch_size=64)
    p["pretrain"]["variants"] = {"mae": {"fuse_blocks": [], "fusion": "softmax"},
                                 "mff": {"fuse_blocks": [0, 2], "fusion": "softmax"}}
    p["analyze"].update(images=100, batch_size=100)
    p["reconstruct"].update(decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=1, steps=10, warmup_steps=2,
                            batch_size=64, val_images=100)
    p["refine"].update(head_epochs=1, epochs=1, warmup_epochs=0, batch_size=128, queue_size=512, proj_hidden=64,
                       proj_out=32, pred_hidden=64, monitor_bank=300, monitor_val=100,
                       mochi={"hardest": 64, "mixes": 16, "query_mixes": 8})
    p["refine"]["variants"] = {"mae_nna": {"pretrained": "mae", "objective": "nna"},
                               "mff_nna": {"pretrained": "mff", "objective": "nna"},
                               "mae_nnclr": {"pretrained": "mae", "objective": "nnclr"},
                               "mae_moco": {"pretrained": "mae", "objective": "moco"},
                               "mae_mochi": {"pretrained": "mae", "objective": "mochi"}}
    p["evaluate"]["geometry"].update(images=200)
    p["probe"].update(batch_size=256)
    return p


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run_stage(stage: str, args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m pipeline.stages.<stage>` in `cwd` with the repo on the path, as both tools do."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", f"pipeline.stages.{stage}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{stage} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def params() -> dict:
    return copy.deepcopy(tiny_params())


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """A prepared digits dataset (results/data/digits of the tiny params), made once per session."""
    work = tmp_path_factory.mktemp("digits")
    write_params(work / "params.yaml", tiny_params())
    run_stage("prepare", ["--out", "results/data/digits"], work)
    return work / "results" / "data" / "digits"


def copy_project(dest: Path) -> Path:
    """Copy the tracked project files (no results, no venv) into `dest`."""
    for name in ("Snakefile", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "pipeline", "rules", "envs"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest
