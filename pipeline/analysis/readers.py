"""The report's inputs: what the upstream stages wrote, read per model and training seed.

Layouts read: results/<stage>/<model>/seed<s>/ (pretrain and refine metrics.json, probe and reconstruct blocks.json,
analyze frequency.{json,csv}, evaluate metrics.json and details.json), the baselines' results/evaluate/baselines/, and the
plot data results/plots/<kind>/<model>/seed<s>.csv (spectrum, refine_curve; the baselines' <kind>/<model>.csv).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.analysis.deltas import refinement_deltas
from pipeline.errors import DataError
from pipeline.records import plot_csv


@dataclass(frozen=True)
class ResultDirs:
    """The folders of each upstream stage's results (the report stage's path options)."""

    probe: Path
    pretrain: Path
    analyze: Path
    evaluate: Path
    refine: Path
    plots: Path
    reconstruct: Path


def require(path: Path) -> Path:
    """`path`, or a one-line DataError naming it when the stage that writes it has not run."""
    if not path.is_file():
        raise DataError(f"report: missing input {path} (run the stage that writes it)")
    return path


def read_json(path: Path) -> dict:
    return json.loads(require(path).read_text())


def read_pretrained(dirs: ResultDirs, variant: str, seed: int) -> dict:
    """One pretrained model's outputs: {"eval", "blocks", "recon", "val_size", "details", "extra", "fusion",
    "frequency"}."""
    d = Path(variant, f"seed{seed}")
    pretrain = read_json(dirs.pretrain / d / "metrics.json")
    probe = read_json(dirs.probe / d / "blocks.json")
    frequency = read_json(dirs.analyze / d / "frequency.json")
    recon = read_json(dirs.reconstruct / d / "blocks.json")["rows"]
    return {"eval": read_json(dirs.evaluate / d / "metrics.json"), "blocks": probe["rows"], "recon": recon,
            "block_correct": probe.get("cls_correct"),  # absent in blocks.json of older runs
            "val_size": probe["val_size"],
            "details": read_json(dirs.evaluate / d / "details.json"),
            "extra": {"depth": probe["depth"], "pretrain_loss": pretrain["loss"],
                      "dlogamp_fmax_last": frequency["high_frequency"][-1],
                      "amplitude_f0_last": frequency["last_block_amplitude"][0],
                      "amplitude_fmax_last": frequency["last_block_amplitude"][-1],
                      "hessian_top_eig": read_json(dirs.analyze / d / "hessian.json")["top_eigenvalue"],
                      "recon_loss_last": recon[-1]["loss"],
                      "recon_best_block": min(recon, key=lambda r: r["loss"])["block"]},
            "fusion": pretrain["fusion_weights"],
            "frequency": pd.read_csv(require(dirs.analyze / d / "frequency.csv"))}


def read_refined(dirs: ResultDirs, name: str, spec: dict, seed: int, pretrained: dict) -> dict:
    """One refined model's outputs (`read_pretrained`'s keys but fusion and frequency; "refine_curve"), its extra
    columns holding its deltas against `pretrained` (its source's outputs of the same seed) and its controls."""
    d = Path(name, f"seed{seed}")
    refine = read_json(dirs.refine / d / "metrics.json")
    probe = read_json(dirs.probe / d / "blocks.json")
    model = {
        "eval": read_json(dirs.evaluate / d / "metrics.json"), "blocks": probe["rows"],
        "block_correct": probe.get("cls_correct"), "val_size": probe["val_size"],
        "details": read_json(dirs.evaluate / d / "details.json"),
        "extra": {"objective": spec["objective"], "pretrained": spec["pretrained"], "depth": refine["depth"],
                  "first_head_block": refine["first_head_block"],
                  "ema_pretrained_share": refine["ema_pretrained_share"],
                  "refine_nn_accuracy": refine["nn_accuracy"], "refine_pos_mass": refine["pos_mass"],
                  **{f"refine_{k}": refine[k] for k in ("cluster_entropy", "neg_top1_share", "neg_top5_share")
                     if k in refine}},
        "refine_curve": pd.read_csv(require(plot_csv(dirs.plots, "refine_curve", name, seed)))}
    model["extra"].update(refinement_deltas(model, pretrained, probe["val_size"]))
    return model


def read_runs(dirs: ResultDirs, seeds: list[int], variants: list[str], refined: dict[str, dict]
              ) -> dict[int, dict[str, dict]]:
    """Training seed -> model -> its outputs (pretrained variants, then refined ones), each with its "spectrum"."""
    runs: dict[int, dict[str, dict]] = {}
    for seed in seeds:
        models = runs[seed] = {}
        for v in variants:
            models[v] = read_pretrained(dirs, v, seed)
        for name, spec in refined.items():
            models[name] = read_refined(dirs, name, spec, seed, models[spec["pretrained"]])
        for name, m in models.items():
            m["spectrum"] = pd.read_csv(require(plot_csv(dirs.plots, "spectrum", name, seed)))
    return runs


def read_baselines(dirs: ResultDirs) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
    """The baselines stage's (metrics.json, details.json), each keyed by baseline ("pixels", "random-init")."""
    return (read_json(dirs.evaluate / "baselines" / "metrics.json"),
            read_json(dirs.evaluate / "baselines" / "details.json"))


def read_baseline_spectrum(dirs: ResultDirs, name: str) -> pd.DataFrame:
    """A baseline's covariance spectra (results/plots/spectrum/<name>.csv: one run, no seed level)."""
    return pd.read_csv(require(plot_csv(dirs.plots, "spectrum", name, None)))
