"""Each stage's CLI on tiny digits: outputs, exact reruns, resume after SIGKILL, one-line errors."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_stage, write_params
from tests.stages.conftest import PRETRAIN, PROBE, error_lines


def test_prepare__card_splits_and_fewshot(digits_dir):
    card = json.loads((digits_dir / "card.json").read_text())
    assert card["counts"] == {"train": 1137, "val": 300, "test": 360}
    assert sum(card["counts_per_class"]["val"]) == 300 and len(card["sha256"]) == 6
    shots = json.loads((digits_dir / "fewshot.json").read_text())
    assert sorted(shots) == ["1", "2"] and len(shots["2"]["1"]) == 20


def test_pretrain_probe__outputs_and_exact_rerun(work):
    run_stage("pretrain", PRETRAIN, work)
    first = {p: (work / p).read_bytes() for p in ("results/pretrain/mae/model.pt",
                                                   "results/pretrain/mae/metrics.json",
                                                   "results/plots/pretrain_curve/mae.csv")}
    assert not (work / "results/pretrain/mae/resume.pt").exists()
    run_stage("pretrain", PRETRAIN, work)
    for path, data in first.items():
        assert (work / path).read_bytes() == data, f"{path} differs on rerun"
    run_stage("probe", PROBE, work)
    blocks = json.loads((work / "results/probe/mae/blocks.json").read_text())
    assert [r["block"] for r in blocks["rows"]] == [0, 1, 2] and 1 <= blocks["depth"] <= 3
    assert all(0 <= r[k] <= 1 for r in blocks["rows"] for k in ("cls", "mean_patch"))
    header = (work / "results/plots/knn_blocks/mae.csv").read_text().splitlines()[0]
    assert header == "block,cls,mean_patch,cls_se,mean_patch_se"
    assert blocks["depth"] == blocks["block"] + 1 and blocks["block"] in blocks["tied_blocks"]  # refine reads depth
    assert blocks["select"] == "one_se" and blocks["knn"] == "mim_refiner" and blocks["k"] == 10
    assert all(r["cls_se"] == pytest.approx((r["cls"] * (1 - r["cls"]) / blocks["val_size"]) ** 0.5)
               for r in blocks["rows"])


def test_pretrain__resumes_after_sigkill_with_same_result(work, params):
    params["pretrain"].update(epochs=6)
    write_params(work / "params.yaml", params)
    run_stage("pretrain", PRETRAIN, work)
    reference = (work / "results/pretrain/mae/model.pt").read_bytes()
    reference_metrics = (work / "results/pretrain/mae/metrics.json").read_bytes()
    (work / "results/pretrain/mae/model.pt").unlink()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.stages.pretrain", *PRETRAIN], cwd=work,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    resume = work / "results/pretrain/mae/resume.pt"
    deadline = time.time() + 120
    while not resume.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert resume.exists() and not (work / "results/pretrain/mae/model.pt").exists()
    proc = run_stage("pretrain", PRETRAIN, work)
    assert "resumed from" in proc.stderr
    assert (work / "results/pretrain/mae/model.pt").read_bytes() == reference
    assert (work / "results/pretrain/mae/metrics.json").read_bytes() == reference_metrics


def test_pretrain__two_processes_from_runtime_nproc_write_once_and_match_one(pretrained, params):
    work = pretrained
    single = json.loads((work / "results/pretrain/mae/metrics.json").read_text())
    params["runtime"]["nproc"] = 2
    write_params(work / "params.yaml", params)
    proc = run_stage("pretrain", [*PRETRAIN[:-3], "results/pretrain/mae2", *PRETRAIN[-2:]], work)
    assert proc.stderr.count("stage pretrain@mae") == 2, "one params line per rank"
    double = json.loads((work / "results/pretrain/mae2/metrics.json").read_text())
    assert double["steps"] == single["steps"] and double["loss"] == pytest.approx(single["loss"], rel=1e-3)
    assert (work / "results/pretrain/mae2/model.pt").is_file()
    assert not (work / "results/pretrain/mae2/resume.pt").exists()


@pytest.mark.parametrize("args, needle", [
    (["--variant", "mea", *PRETRAIN[2:]], "params: unknown variant 'mea' (pretrain.variants has: mae, mff)"),
    ([*PRETRAIN[:2], "--data", "results/data/cifar10", *PRETRAIN[4:]],
     "prepared dataset incomplete: results/data/cifar10/arrays.npz is missing (run the prepare stage)"),
])
def test_pretrain__bad_input_one_line(work, args, needle):
    proc = run_stage("pretrain", args, work, check=False)
    assert proc.returncode == 2
    assert error_lines(proc) == [f"error: {needle}"]
    assert "Traceback" not in proc.stderr


def test_evaluate__two_processes_shard_features_and_fine_tune_with_the_same_metrics(pretrained, params):
    work = pretrained
    params["evaluate"]["finetune"].update(epochs=1, warmup_epochs=0, batch_size=128)
    params["evaluate"]["linear"].update(epochs=2)
    write_params(work / "params.yaml", params)
    args = ["--variant", "mae", "--data", "results/data/digits", "--model", "results/pretrain/mae/model.pt",
            "--plots", "results/plots", "--out"]
    run_stage("evaluate", [*args, "results/evaluate/one"], work)
    params["runtime"]["nproc"] = 2
    write_params(work / "params.yaml", params)
    run_stage("evaluate", [*args, "results/evaluate/two"], work)
    one, two = (json.loads((work / f"results/evaluate/{n}/metrics.json").read_text()) for n in ("one", "two"))
    assert set(one) == set(two)
    frozen = {k: v for k, v in one.items() if k != "finetune"}  # gathered features are the same features
    assert {k: two[k] for k in frozen} == pytest.approx(frozen, abs=2e-3)
    assert two["finetune"] == pytest.approx(one["finetune"], abs=0.1)  # DDP fine-tune, per-rank mixup pairs


def test_pretrain__two_processes_bad_input_error_lines_and_exit_2(work, params):
    params["runtime"]["nproc"] = 2
    write_params(work / "params.yaml", params)
    proc = run_stage("pretrain", ["--variant", "mea", *PRETRAIN[2:]], work, check=False)
    assert proc.returncode == 2
    lines = error_lines(proc)
    # the rank that fails second may be stopped by torchrun before it prints: one or two lines, never other text
    assert set(lines[:-1]) == {"error: params: unknown variant 'mea' (pretrain.variants has: mae, mff)"}
    # both ranks failed on their own, or one did and torchrun stopped the other
    assert re.fullmatch(r"error: pipeline\.stages\.pretrain failed in (2 of 2 processes \(exit codes \[2\]\)"
                        r"|1 of 2 processes \(exit codes \[2\]\); torchrun stopped 1 other)"
                        r"; their error lines are above", lines[-1])
    assert "Traceback" not in proc.stderr


def test_stage__float_written_as_string(work):
    text = (work / "params.yaml").read_text().replace("mask_ratio: 0.75", "mask_ratio: 75e-2", 1)
    (work / "params.yaml").write_text(text)
    proc = run_stage("probe", PROBE, work, check=False)
    assert proc.returncode == 2
    assert error_lines(proc) == ["error: params: pretrain.mask_ratio = '75e-2' is read as a string; write floats "
                                 "with a dot and a signed exponent, e.g. 1.0e-3"]


def test_probe__corrupt_checkpoint(work):
    (work / "results/pretrain/mae").mkdir(parents=True)
    (work / "results/pretrain/mae/model.pt").write_bytes(b"PK\x03\x04 not really a zip")
    proc = run_stage("probe", PROBE, work, check=False)
    assert proc.returncode == 2
    assert error_lines(proc) == ["error: results/pretrain/mae/model.pt: corrupt or truncated checkpoint "
                                 "(RuntimeError)"]
    assert not (work / "results/probe/mae/metrics.json").exists()


def test_prepare__fashion_mnist_subset_from_debian_package(tmp_path, params):
    from pipeline.data.sources import DEBIAN_FASHION_MNIST

    if not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"{DEBIAN_FASHION_MNIST} not installed (make test installs Debian's dataset-fashion-mnist)")
    params["data"].update(dataset="fashion_mnist", val_size=1000, train_limit=2000, test_limit=500)
    write_params(tmp_path / "params.yaml", params)
    run_stage("prepare", ["--out", "results/data/fashion_mnist"], tmp_path)
    card = json.loads((tmp_path / "results/data/fashion_mnist/card.json").read_text())
    assert card["counts"] == {"train": 2000, "val": 1000, "test": 500} and card["shape"] == [28, 28, 1]
    assert card["counts_per_class"]["val"] == [100] * 10 and card["classes"][0] == "t-shirt"
    assert 0.25 < card["mean"][0] < 0.32  # Fashion-MNIST's pixel mean is about 0.286


def test_evaluate__all_protocols_with_a_short_finetune(pretrained, params):
    work = pretrained
    params["evaluate"]["finetune"].update(epochs=1, warmup_epochs=0, batch_size=128, mixup=0.8, cutmix=1.0,
                                          drop_path=0.1, smoothing=0.1)
    params["evaluate"]["linear"].update(epochs=3)
    write_params(work / "params.yaml", params)
    run_stage("evaluate", ["--variant", "mae", "--data", "results/data/digits", "--model",
                           "results/pretrain/mae/model.pt", "--out", "results/evaluate/mae", "--plots",
                           "results/plots"], work)
    metrics = json.loads((work / "results/evaluate/mae/metrics.json").read_text())
    geometry = {f"{m}_{how}" for m in ("rankme", "hard_rank", "top_eigen_share")
                for how in ("raw", "centred", "standardized")} | {"alignment", "uniformity"}
    knn = {f"knn_{p}_{pool}" for p in ("mim_refiner", "dino") for pool in ("cls", "mean_patch", "cls_prenorm")}
    fewshot = {f"fewshot_{p}_{k}" for p in ("tuned", "msn") for k in (1, 2)}  # both protocols by name
    assert set(metrics) == {"knn_cls", "knn_mean_patch", "knn_cls_prenorm", "linear", "fewshot_1", "fewshot_2",
                            "kmeans_acc", "kmeans_nmi", "kmeans_ari", "finetune"} | geometry | knn | fewshot
    assert metrics["fewshot_1"] == metrics["fewshot_tuned_1"]  # the headline protocol (evaluate.fewshot_headline)
    assert metrics["knn_cls"] == metrics[f"knn_{params['evaluate']['knn_headline']}_cls"]
    assert all(0 <= v <= 1 for k, v in metrics.items() if k not in geometry or k.startswith("top_eigen_share"))
    assert all(1 <= metrics[k] <= 32 for k in geometry if k.startswith(("rankme", "hard_rank")))  # width 32
    assert 0 <= metrics["alignment"] <= 4 and -4 <= metrics["uniformity"] <= 0
    spectrum = (work / "results/plots/spectrum/mae.csv").read_text().splitlines()
    assert spectrum[0] == ("index,log10_singular_value_raw,log10_singular_value_centred,"
                           "log10_singular_value_standardized") and len(spectrum) == 1 + 32
    details = json.loads((work / "results/evaluate/mae/details.json").read_text())
    assert set(details["linear"]["val"]) == {str(lr) for lr in params["evaluate"]["linear"]["lrs"]}
    assert len(details["fewshot"]["2"]["runs"]) == 2
    # the per-image record behind the headline k-NN and the linear probe: one 0/1 per test image, its mean the number
    bits = details["knn"]["protocols"][details["knn"]["headline"]]["correct"]["cls"]
    assert len(bits) == 360 and set(bits) <= {"0", "1"} and bits.count("1") / 360 == pytest.approx(metrics["knn_cls"], abs=1e-6)
    assert details["linear"]["test_correct"].count("1") / 360 == pytest.approx(metrics["linear"], abs=1e-6)
    for sel in (details["linear"]["selection"], details["fewshot"]["2"]["selection"]):
        assert len(sel["grid"]) >= 2 and sel["pick"] in sel["grid"] and isinstance(sel["edge"], bool)
