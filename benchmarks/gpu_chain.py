"""The GPU check's chain section: prepare -> pretrain -> probe -> refine -> evaluate of the GPU profile, shortened.

The stages run through their `main(argv)` with the argv that dvc.yaml (written from rules/) gives them, in this process
(a stage's seconds leave out the interpreter and import start, 5-15 s under the tools), in a temporary workspace
whose params.yaml is the project's, switched to profiles/gpu/params.yaml by `pipeline.config.switch` (as `make gpu`
does) and then shortened (fewer epochs, one variant). Without a real
Fashion-MNIST folder (--data-root) the data is a stand-in in its IDX format: scikit-learn's digits drawn at 3x
scale at random offsets on the 28 px canvas, as many images as Fashion-MNIST has; its metrics are those of that
stand-in, not of Fashion-MNIST.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
CHAIN = ("prepare", "pretrain", "probe", "refine", "evaluate_refined")  # the DAG's rule names, in DAG order
FILL = {"dataset": "fashion_mnist", "variant": "mae", "pretrained": "mae", "refined": "mae_nna", "seed": 0}
METRICS = {"pretrain": "results/pretrain/mae/seed0/metrics.json", "probe": "results/probe/mae/seed0/metrics.json",
           "refine": "results/refine/mae_nna/seed0/metrics.json",
           "evaluate_refined": "results/evaluate/mae_nna/seed0/metrics.json"}


def write_idx(path: Path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file (the MNIST format): magic 0x0000 08 <ndim>, big-endian int32 dims, the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())


def digits_standin(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Fashion-MNIST-format files of 28 px digits: each an 8x8 sklearn digit scaled 3x (24 px) at a random offset."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pick = rng.integers(0, len(small), n)
        canvas = np.zeros((n, 28, 28), np.uint8)
        offsets = rng.integers(0, 5, (n, 2))
        big = small[pick].repeat(3, axis=1).repeat(3, axis=2)
        for i, (dy, dx) in enumerate(offsets):
            canvas[i, dy:dy + 24, dx:dx + 24] = big[i]
        write_idx(root / f"{prefix}-images-idx3-ubyte", canvas)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", bunch.target[pick].astype(np.uint8))
    return root


def shorten(params: dict, smoke: bool, device: str, data_root: str) -> dict:
    """The switched GPU-profile params cut to a few minutes: one MAE -> NNA branch, a few epochs, one seed."""
    params["seeds"] = [0]
    params["runtime"].update(device=device, nproc=1)
    params["data"].update(dataset="fashion_mnist", root=data_root, stream=False)
    params["pretrain"]["variants"] = {"mae": params["pretrain"]["variants"]["mae"]}
    params["pretrain"].update(epochs=1 if smoke else 2, warmup_epochs=1 if not smoke else 0, checkpoint_every=1)
    params["refine"]["variants"] = {"mae_nna": {"pretrained": "mae", "objective": "nna"}}
    params["refine"].update(head_epochs=1, epochs=1, warmup_epochs=0, checkpoint_every=1)
    params["evaluate"]["linear"].update(epochs=2)
    params["evaluate"]["finetune"].update(epochs=0 if smoke else 1, warmup_epochs=0)
    if smoke:  # a tiny encoder and data that a CPU runs in seconds
        params["runtime"].update(threads=2)
        params["data"].update(val_size=200, train_limit=0, test_limit=0, fewshot_seeds=[0])
        params["model"].update(embed_dim=32, depth=3, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
                               decoder_num_heads=2)
        params["pretrain"].update(batch_size=64)
        params["refine"].update(batch_size=128, queue_size=512, proj_hidden=64, proj_out=32, pred_hidden=64,
                                monitor_bank=300, monitor_val=100, local_crops=0)
        params["evaluate"].update(batch_size=256)
        params["evaluate"]["geometry"].update(images=100)
        params["probe"].update(batch_size=256, chunk_size=256)
        if "analyze" in params:
            params["analyze"].update(images=100, batch_size=100)
    return params


def make_workspace(work: Path, smoke: bool, device: str, data_root: str | None) -> Path:
    """work/params.yaml: the project's params switched to the GPU profile, then `shorten`ed; work/fmnist: data."""
    try:
        from pipeline import config  # the stages validate their params with it
    except ImportError as err:
        raise ImportError(f"{err}: the stages need jsonschema and ruamel.yaml; on a GPU machine without them, carry "
                          f"their wheels (README, GPU check)") from None

    if data_root is None:
        data_root = str(digits_standin(work / "fmnist", *((800, 200) if smoke else (60000, 10000))))
    shutil.copy2(REPO / "params.yaml", work / "params.yaml")
    config.switch(REPO / "profiles" / "gpu" / "params.yaml", work / "params.yaml")
    params = shorten(yaml.safe_load((work / "params.yaml").read_text()), smoke, device, data_root)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    config.load_params(work / "params.yaml")  # the shortened file is still valid
    return work


def stage_argv(name: str) -> tuple[str, list[str]]:
    """The module and argv of DAG stage `name` for the chain's one branch, as dvc.yaml (written from rules/) runs it."""
    from pipeline.dvc_yaml import stage_argv as dvc_stage_argv

    return dvc_stage_argv(name, FILL)


def run_chain(work: Path, on_stage_end: Callable[[], None]) -> dict:
    """Run the CHAIN stages' `main(argv)` in `work`, one after the other in this process (no interpreter start
    per stage); stop at the first failure. `on_stage_end` runs after each (to free device memory).

    Returns:
        {"stages": {name: {"seconds", "error"?}}, "metrics": {name: its metrics.json}, "data": the data card's
        origin, counts and shape}.
    """
    stages: dict[str, dict] = {}
    metrics: dict[str, dict] = {}
    with contextlib.chdir(work):  # argv and the params file are relative to the workspace, as under the tools
        for name in CHAIN:
            module, argv = stage_argv(name)
            t0 = time.perf_counter()
            try:
                importlib.import_module(module).main(argv)
            except Exception as err:  # PipelineError or a bug: recorded, and the later stages cannot run
                stages[name] = {"seconds": round(time.perf_counter() - t0, 2),
                                "error": f"{type(err).__name__}: {err}"[:500]}
                break
            finally:
                on_stage_end()
            stages[name] = {"seconds": round(time.perf_counter() - t0, 2)}
            if name in METRICS:
                metrics[name] = json.loads((work / METRICS[name]).read_text())
    card = work / "results" / "data" / "fashion_mnist" / "card.json"
    data = json.loads(card.read_text()) if card.exists() else {}
    return {"stages": stages, "metrics": metrics,
            "data": {k: data[k] for k in ("origin", "counts", "shape") if k in data}}
