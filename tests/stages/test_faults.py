"""Injected faults: a kill during a write, a diverging run, bad inputs after good outputs, concurrent runs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from pipeline.lock import output_lock
from tests.conftest import REPO, run_stage, write_params
from tests.stages.conftest import PRETRAIN, PROBE, error_lines


def test_atomic_write__killed_mid_write_leaves_no_output(tmp_path):
    script = ("import sys, time\nfrom pipeline.atomic import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n"
              "    f = open(tmp, 'wb'); f.write(b'x' * 1000); f.flush(); print('writing', flush=True)\n"
              "    time.sleep(60)\n")
    target = tmp_path / "out" / "model.pt"
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    leftovers = [p.name for p in target.parent.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-model.pt-")  # ignored by git and DVC


def test_pretrain__diverging_run_stops_with_step_and_writes_nothing(work, params):
    params["pretrain"].update(blr=1.0e+9, epochs=3, warmup_epochs=0)
    write_params(work / "params.yaml", params)
    proc = run_stage("pretrain", PRETRAIN, work, check=False)
    assert proc.returncode == 2
    [line] = error_lines(proc)
    assert line.startswith("error: non-finite loss at step ") and "last good checkpoint: none" in line
    assert not (work / "results/pretrain/mae/model.pt").exists()
    assert not (work / "results/pretrain/mae/metrics.json").exists()
    # nothing else either: no DVCLive folder, and the --out folder the stage made is gone (issue 21)
    assert not (work / "results/pretrain/mae").exists()


def test_probe__bad_params_after_a_good_run_change_nothing(pretrained):
    work = pretrained
    run_stage("probe", PROBE, work)
    outputs = ["results/probe/mae/blocks.json", "results/probe/mae/metrics.json", "results/plots/knn_blocks/mae.csv"]
    before = {p: (work / p).read_bytes() for p in outputs}
    text = (work / "params.yaml").read_text()
    good = "  knn: mim_refiner"
    for bad in (text.replace(good, "  knnn: mim_refiner"), text.replace(good, "  knn: mim")):
        (work / "params.yaml").write_text(bad)
        proc = run_stage("probe", PROBE, work, check=False)
        assert proc.returncode == 2 and len(error_lines(proc)) == 1
    assert {p: (work / p).read_bytes() for p in outputs} == before


def test_prepare__more_shots_than_images_in_a_class(tmp_path, params):
    params["data"].update(fewshot_shots=[1, 500])
    write_params(tmp_path / "params.yaml", params)
    proc = run_stage("prepare", ["--out", "results/data/digits"], tmp_path, check=False)
    assert proc.returncode == 2
    assert error_lines(proc)[0].startswith("error: data.fewshot_shots: 500 shots asked but class 0 has only")
    assert not (tmp_path / "results/data/digits/card.json").exists()


def test_output_lock__second_holder_fails_with_pid(tmp_path):
    with output_lock(tmp_path / "out"):
        child = subprocess.run([sys.executable, "-c", "from pipeline.lock import output_lock\n"
                                f"with output_lock({str(tmp_path / 'out')!r}): pass"],
                               cwd=REPO, capture_output=True, text=True)
        assert child.returncode != 0 and f"pid {os.getpid()}" in child.stderr
    with output_lock(tmp_path / "out"):  # released on exit: free again
        pass


def test_pretrain__concurrent_run_of_the_same_stage_is_refused(work, params):
    params["pretrain"].update(epochs=40)  # long enough to still hold the lock when the second run starts
    write_params(work / "params.yaml", params)
    first = subprocess.Popen([sys.executable, "-m", "pipeline.stages.pretrain", *PRETRAIN], cwd=work,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True)
    lock = work / "results/pretrain/mae/.lock"
    deadline = time.time() + 60
    while not (lock.exists() and lock.read_text().strip() == str(first.pid)) and time.time() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "the first run ended before the second could start"
    second = run_stage("pretrain", PRETRAIN, work, check=False)
    assert second.returncode == 2
    assert error_lines(second) == [f"error: results/pretrain/mae is being written by another run (pid {first.pid}); "
                                   f"wait for it to finish"]
    assert first.wait(timeout=600) == 0
    assert (work / "results/pretrain/mae/model.pt").exists()

