"""pretrain and refine with data.stream on a generated JPEG ImageFolder, and a dry run of the ImageNet profile."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import config
from tests.conftest import REPO, copy_project, run_stage, tiny_params, write_params
from tests.dag.test_parity import tool
from tests.data.test_stream import write_jpeg_folder
from tests.stages.conftest import error_lines

PRETRAIN = ["--variant", "mae", "--data", "results/data/imagefolder", "--out", "results/pretrain/mae",
            "--plots", "results/plots"]


def stream_params(root: Path, workers: int) -> dict:
    """The tiny params on a 3-class JPEG folder at 16 px: 15 streamed images (3 held out), batch 5, 2 epochs."""
    p = tiny_params()
    p["data"].update(dataset="imagefolder", root=str(root), image_size=16, val_size=3, fewshot_shots=[1],
                     fewshot_seeds=[0], stream=True, workers=workers)
    p["model"].update(patch_size=4)
    p["pretrain"].update(batch_size=5)
    p["refine"].update(batch_size=5, local_crops=1, local_size=8, queue_size=8, monitor_bank=6, monitor_val=3)
    return p


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A work dir whose results/data/imagefolder was prepared from a generated JPEG folder (3 x 6 train, 3 x 2 val)."""
    work = tmp_path_factory.mktemp("stream")
    write_params(work / "params.yaml", stream_params(write_jpeg_folder(work / "jpegs"), workers=2))
    run_stage("prepare", ["--out", "results/data/imagefolder"], work)
    return work


def test_pretrain_stream__writes_the_model_and_the_worker_count_does_not_change_it(prepared):
    proc = run_stage("pretrain", PRETRAIN, prepared)
    assert "streaming 15 images" in proc.stderr and "through 2 workers" in proc.stderr
    metrics = json.loads((prepared / "results/pretrain/mae/metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["epochs"] == 2
    write_params(prepared / "params.yaml", stream_params(prepared / "jpegs", workers=0))
    run_stage("pretrain", [*PRETRAIN[:-3], "results/pretrain/mae_inline", *PRETRAIN[-2:]], prepared)
    for name in ("model.pt", "metrics.json"):
        assert (prepared / "results/pretrain/mae_inline" / name).read_bytes() == \
            (prepared / "results/pretrain/mae" / name).read_bytes(), name


def test_refine_stream__draws_mim_refiner_views_in_workers_and_the_worker_count_does_not_change_it(prepared):
    if not (prepared / "results/pretrain/mae/model.pt").exists():
        run_stage("pretrain", PRETRAIN, prepared)
    run_stage("probe", ["--variant", "mae", "--data", "results/data/imagefolder", "--model",
                        "results/pretrain/mae/model.pt", "--out", "results/probe/mae", "--plots", "results/plots"],
              prepared)
    refine = ["--variant", "mae_moco", "--data", "results/data/imagefolder", "--model", "results/pretrain/mae/model.pt",
              "--probe", "results/probe/mae/blocks.json", "--plots", "results/plots", "--out"]
    outs = {}
    for workers in (2, 0):
        write_params(prepared / "params.yaml", stream_params(prepared / "jpegs", workers=workers))
        proc = run_stage("refine", [*refine, f"results/refine/w{workers}"], prepared)
        assert "streaming 15 images" in proc.stderr
        outs[workers] = (prepared / f"results/refine/w{workers}/model.pt").read_bytes()
    metrics = json.loads((prepared / "results/refine/w0/metrics.json").read_text())
    ckpt = torch.load(prepared / "results/refine/w0/model.pt", weights_only=True)
    assert ckpt["objective"] == "moco" and metrics["loss"] > 0 and metrics["depth"] == ckpt["arch"]["depth"]
    assert outs[2] == outs[0]


@pytest.mark.parametrize("change, needle", [
    ("move", "imagefolder: missing folder {root}/train"),
    ("add_class", "imagefolder: the class folders of {root}/train (4) differ from the classes of the prepared "
                  "card (3); rerun prepare"),
])
def test_pretrain_stream__a_folder_gone_or_changed_since_prepare_is_one_line(prepared, tmp_path, change, needle):
    root = tmp_path / "copy"
    shutil.copytree(prepared / "jpegs", root)
    if change == "move":
        shutil.rmtree(root / "train")
    else:
        (root / "train" / "dog").mkdir()
        shutil.copy(root / "train" / "ant" / "000.jpg", root / "train" / "dog" / "000.jpg")
    write_params(tmp_path / "params.yaml", stream_params(root, workers=0))
    (tmp_path / "results" / "data").mkdir(parents=True)
    (tmp_path / "results" / "data" / "imagefolder").symlink_to(prepared / "results" / "data" / "imagefolder")
    proc = run_stage("pretrain", PRETRAIN, tmp_path, check=False)
    assert proc.returncode == 2 and error_lines(proc) == [f"error: {needle.format(root=root)}"]


def test_imagenet_profile__validates_and_snakemake_plans_the_dag(tmp_path):
    (tmp_path / "project").mkdir()
    project = copy_project(tmp_path / "project")
    overlay = tmp_path / "root.yaml"
    overlay.write_text(yaml.safe_dump({"data": {"root": str(write_jpeg_folder(tmp_path / "jpegs", 1, 1))}}))
    config.switch(REPO / "profiles" / "imagenet" / "params.yaml", project / "params.yaml")
    config.switch(overlay, project / "params.yaml")
    p = config.load_params(project / "params.yaml")
    assert p["data"]["stream"] and p["data"]["image_size"] == 224 and p["data"]["root"] == str(tmp_path / "jpegs")
    assert (p["model"]["patch_size"], p["model"]["embed_dim"], p["model"]["depth"]) == (16, 768, 12)
    assert p["pretrain"]["variants"]["mff"]["fuse_blocks"] == [0, 2, 4, 6, 8, 11]
    plan = tool(["snakemake", "-n", "--cores", "2"], project).stdout
    assert "prepare" in plan and "pretrain" in plan and "report" in plan


def test_evaluate_full_train_split__equals_the_prepared_one_where_prepare_kept_every_image(prepared, tmp_path):
    """With data.train_limit 0 the prepared train arrays are the whole folder less the hold-out, so evaluating on
    the folder decoded batch by batch (evaluate.train_split=full) must give the same numbers, byte for byte."""
    if not (prepared / "results/pretrain/mae/model.pt").exists():
        run_stage("pretrain", PRETRAIN, prepared)
    out = {}
    for split in ("prepared", "full"):
        p = stream_params(prepared / "jpegs", workers=2)
        p["evaluate"].update(train_split=split, batch_size=4)
        p["evaluate"]["linear"].update(batch_size=5)
        p["evaluate"]["finetune"].update(epochs=1, batch_size=5, warmup_epochs=0)
        write_params(prepared / "params.yaml", p)
        run_stage("evaluate", ["--variant", "mae", "--data", "results/data/imagefolder", "--model",
                               "results/pretrain/mae/model.pt", "--out", f"results/evaluate/{split}", "--plots",
                               str(tmp_path / split)], prepared)
        out[split] = {name: json.loads((prepared / f"results/evaluate/{split}/{name}.json").read_text())
                      for name in ("metrics", "details")}
    assert out["full"]["details"].pop("train_split") == {"name": "full", "size": 15}
    assert out["prepared"]["details"].pop("train_split") == {"name": "prepared", "size": 15}
    assert out["full"] == out["prepared"] and "finetune" in out["full"]["metrics"]
