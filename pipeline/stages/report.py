"""report: the comparison table, figures and top-level metrics from every variant's outputs."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pandas as pd

from pipeline.analysis.figures import (
    fewshot_figure,
    frequency_figure,
    fusion_weights_figure,
    knn_blocks_figure,
    model_styles,
    negatives_top_share_figure,
    spectrum_figure,
)
from pipeline.analysis.deltas import deltas_markdown, refinement_deltas
from pipeline.analysis.seeds import SPREAD_NOTE, aggregate_table, markdown_with_spread
from pipeline.analysis.summary import ANALYSIS_COLUMNS, markdown_table, summary_table
from pipeline.atomic import write_json, write_text
from pipeline.errors import DataError
from pipeline.stages.runner import code_version, fingerprint, load_stage_params, plot_csv, run, stage_parser

log = logging.getLogger(__name__)

SUMMARY_HEADER = """# Summary

Accuracies in %. knn_cls and knn_mean_patch (the headline k-NN protocol, params evaluate.knn_headline), knn_dino_cls
(DINO's protocol: k 20, T 0.07, raw features), linear, fewshot_<shots> (mean over the fixed splits), kmeans_* and
finetune are on the test split, with hyperparameters chosen on the validation split (⚠: a grid capped the pick;
edge_picks names the key to widen). val_knn_* is the probe's per-block k-NN (CLS, headline protocol) on the
validation split, blocks 0-based; refine_nn_accuracy is the NN-retrieval accuracy at the end of refinement.
cluster_head_* (cc refinements only): the cluster head's own argmax assignments on test, scored like kmeans_*.
Collapse analysis on a val subset of the evaluated feature: rankme_raw is RankMe as its paper defines it (the
effective rank of the raw features' singular values; 1 = collapsed), uniformity log E exp(-2 d²) on L2-normalized
features (0 = collapsed, lower = more spread); the analyses section below has RankMe of the centred and
standardized features too. summary.csv has every column (both protocols, NMI, hard ranks, alignment, the Fourier
statistics, the refinement's deltas and the online and cut-only-control metrics).

"""

REFINEMENT_HEADER = """
## Refinement against its controls

Differences in accuracy points, ± one standard error (binomial for k-NN on the test split and for the val k-NN;
over the fixed splits for 1-shot). vs pretrained: the same protocols on the encoder refinement started from;
val k-NN vs best block: the refined model's last block against the pretrained encoder's best block (the probe,
CLS, validation split); vs cut-only control: the pretrained encoder cut at the refined depth and not trained
(only for a cut encoder, refine.depth); EMA pretrained share: the weight of the pretrained encoder left in the
EMA that model.pt holds; k-NN EMA / online: test k-NN of the evaluated EMA encoder and of the online one.

"""

ANALYSES_HEADER = """
## Collapse, frequency and hardness analyses

Collapse (val subset; analysis/geometry.py): rankme_<p> is RankMe of the features after preprocessing p: raw (as
they are: RankMe's definition, Garrido et al. 2023), centred (minus the mean feature) or standardized (centred,
each channel divided by its std, so a few high-variance channels cannot dominate). top_eigen_share_<p> is the
largest eigenvalue's share of the covariance spectrum of the L2-normalized features after p (centred: Jing et al.
2022's spectrum); 1/width is flat, 1 is one direction. Columns without a prefix are the backbone feature the
protocols read; embedding_* is a refined model's embedding (the projector output of its last head block, where its
loss acts; spectrum.png's lower row). Frequency (pretrained encoders; analyze): the last block's linear Fourier
amplitude along the diagonal of the token grid, absolute, at frequency 0 (amplitude_f0_last) and at the highest
frequency 2π·floor(n/2)/n of the n x n grid (amplitude_fmax_last; 6π/7 on 7 x 7), and the Δ log amplitude there
relative to frequency 0 (dlogamp_fmax_last); frequency.png's last panel draws the whole spectrum. Hardness
(MoCHi, Kalantidis et al. 2020): refine_neg_top1_share / top5 the share of the negatives' softmax mass held by the
hardest 1% / 5% of them in the last epoch (the queue for moco/mochi, the batch for nna/nnclr);
negatives_top_share.png draws it per epoch.

"""

# columns left out of summary.md's main table (the refinement table or summary.csv has them)
MD_HIDDEN = ("d_", "online_", "control_", "knn_mim_refiner_", "knn_dino_mean_patch", "rankme_centred",
             "rankme_standardized", "hard_rank_", "top_eigen_share_", "embedding_", "amplitude_", "refine_neg_top")
MD_HIDDEN_COLS = {"kmeans_nmi", "cluster_head_nmi", "cluster_head_used", "refine_cluster_entropy", "hard_rank",
                  "alignment", "dlogamp_fmax_last", "objective", "pretrained", "depth", "first_head_block",
                  "ema_pretrained_share", "refine_pos_mass", "test_size", "val_size"}

# the params keys this stage reads: its rule's params in rules/ (pipeline/deps.py), and so its dvc.yaml params
PARAMS = ("pretrain.variants", "refine.variants", "seeds")

BASELINES = ("random-init", "pixels")  # run once (the data seed), not per training seed
# the DVC metrics file (metrics.json) holds these per model, so `dvc metrics show` and `dvc exp show` stay a
# terminal-wide table; all_metrics.json (a plain output) holds every number for pipeline.compare and the full view
HEADLINE = ("knn_cls", "linear", "fewshot_1", "fewshot_10", "finetune", "val_knn_best")


def require(path: Path) -> Path:
    """`path`, or a one-line DataError naming it when the stage that writes it has not run."""
    if not path.is_file():
        raise DataError(f"report: missing input {path} (run the stage that writes it)")
    return path


def read_json(path: Path) -> dict:
    return json.loads(require(path).read_text())


def numbers_only(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """model -> metric -> number, from the aggregated table: names and flags (summary.csv keeps them) and blanks
    left out, so every metrics column is numeric and means one thing."""
    return {row["model"]: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()
                           if k != "model" and isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
            for row in table.to_dict("records")}


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("report", __doc__, False, {
        "probe": "results/probe",
        "pretrain": "results/pretrain",
        "analyze": "results/analyze",
        "evaluate": "results/evaluate",
        "refine": "results/refine",
        "plots": "results/plots (reads spectrum/ and refine_curve/)",
        "out": "results/report",
    })
    args = parser.parse_args(argv)
    p = load_stage_params("report", PARAMS, args.params)
    variants, refined = list(p["pretrain"]["variants"]), p["refine"]["variants"]

    runs: dict[int, dict[str, dict]] = {}  # training seed -> model -> its outputs (results/<stage>/<model>/seed<s>)
    for seed in p["seeds"]:
        models = runs[seed] = {}
        for v in variants:
            d = Path(v, f"seed{seed}")
            pretrain = read_json(args.pretrain / d / "metrics.json")
            probe = read_json(args.probe / d / "blocks.json")
            frequency = read_json(args.analyze / d / "frequency.json")
            models[v] = {"eval": read_json(args.evaluate / d / "metrics.json"), "blocks": probe["rows"],
                         "val_size": probe["val_size"],
                         "details": read_json(args.evaluate / d / "details.json"),
                         "extra": {"depth": probe["depth"], "pretrain_loss": pretrain["loss"],
                                   "dlogamp_fmax_last": frequency["high_frequency"][-1],
                                   "amplitude_f0_last": frequency["last_block_amplitude"][0],
                                   "amplitude_fmax_last": frequency["last_block_amplitude"][-1]},
                         "fusion": pretrain["fusion_weights"],
                         "frequency": pd.read_csv(require(args.analyze / d / "frequency.csv"))}
        for name, spec in refined.items():
            d = Path(name, f"seed{seed}")
            refine = read_json(args.refine / d / "metrics.json")
            probe = read_json(args.probe / d / "blocks.json")
            models[name] = {
                "eval": read_json(args.evaluate / d / "metrics.json"), "blocks": probe["rows"],
                "val_size": probe["val_size"], "details": read_json(args.evaluate / d / "details.json"),
                "extra": {"objective": spec["objective"], "pretrained": spec["pretrained"], "depth": refine["depth"],
                          "first_head_block": refine["first_head_block"],
                          "ema_pretrained_share": refine["ema_pretrained_share"],
                          "refine_nn_accuracy": refine["nn_accuracy"], "refine_pos_mass": refine["pos_mass"],
                          **{f"refine_{k}": refine[k] for k in ("cluster_entropy", "neg_top1_share", "neg_top5_share")
                             if k in refine}},
                "refine_curve": pd.read_csv(require(plot_csv(args.plots, "refine_curve", name, seed)))}
            models[name]["extra"].update(refinement_deltas(models[name], models[spec["pretrained"]],
                                                           probe["val_size"]))
        for name, m in models.items():
            m["spectrum"] = pd.read_csv(require(plot_csv(args.plots, "spectrum", name, seed)))
    baselines = read_json(args.evaluate / "baselines" / "metrics.json")
    details = read_json(args.evaluate / "baselines" / "details.json")
    random_blocks = details["random-init"]["blocks"]
    # one table per seed (deltas pair each refined model with its source of the same seed), then mean, std, n
    table = aggregate_table([summary_table(models, random_blocks, baselines, details) for models in runs.values()],
                            single=BASELINES)
    write_text(args.out / "summary.csv", table.to_csv(index=False, float_format="%.6g"))
    # summary.md shows the headline columns; summary.csv and metrics.json keep every one
    main_cols = [c for c in table if not c.startswith(MD_HIDDEN) and c.removesuffix("_std") not in MD_HIDDEN_COLS
                 and "_split" not in c]
    analysis_cols = ["model", *(c for c in table if c.removesuffix("_std") in ANALYSIS_COLUMNS)]
    write_text(args.out / "summary.md", SUMMARY_HEADER + SPREAD_NOTE + markdown_with_spread(table[main_cols],
               markdown_table) + REFINEMENT_HEADER + deltas_markdown(table.to_dict("records")) + ANALYSES_HEADER
               + markdown_with_spread(table[analysis_cols], markdown_table))
    # figures: one entry per seed for every model (each draws the mean and the spread over seeds), baselines once;
    # one style per model from params, so a model looks the same in every figure
    names = list(runs[p["seeds"][0]])
    over_seeds = {name: [runs[s][name] for s in runs] for name in names}
    styles = model_styles(variants, list(refined), BASELINES)
    # The footer names the code (the git commit, +dirty when pipeline/ differs from it; the stage's log line says
    # the same) and a hash of the params this stage read. Trade-off: a rerun at the same commit writes the same
    # bytes, so `dvc repro -f` leaves `dvc status` and git clean; a forced rerun after a new commit (committing the
    # results is one) rewrites the PNGs and their hashes in dvc.lock with nothing else changed. A file cannot name
    # the commit that records it: the stamp is the commit the run started from. The hash covers only this stage's
    # keys: a hash of all of params.yaml would differ after edits that never rerun the report, so a forced rerun
    # would rewrite the PNGs; an upstream key changes the figures through the stage that reads it.
    stamp = f"code {code_version()} · report params {fingerprint(p)[:8]}"
    look = {"styles": styles, "stamp": stamp}
    knn_blocks_figure({**{name: [m["blocks"] for m in ms] for name, ms in over_seeds.items()},
                       "random-init": [random_blocks]}, args.out / "knn_blocks.png", **look)
    frequency_figure({v: [m["frequency"] for m in over_seeds[v]] for v in variants}, args.out / "frequency.png",
                     **look)
    fewshot_figure({**{name: [m["details"]["fewshot"] for m in ms] for name, ms in over_seeds.items()},
                    **{name: [d["fewshot"]] for name, d in details.items()}}, args.out / "fewshot.png", **look)
    spectrum_figure({**{name: [m["spectrum"] for m in ms] for name, ms in over_seeds.items()},
                     **{name: [pd.read_csv(require(args.plots / "spectrum" / f"{name}.csv"))] for name in BASELINES}},
                    args.out / "spectrum.png", **look,
                    embeddings={r: [pd.DataFrame(m["details"]["embedding_spectrum"]) for m in over_seeds[r]]
                                for r in refined if "embedding_spectrum" in over_seeds[r][0]["details"]})
    fusion_weights_figure({v: [m["fusion"] for m in over_seeds[v]] for v in variants if over_seeds[v][0]["fusion"]},
                          args.out / "fusion_weights.png", **look)
    negatives_top_share_figure({r: [m["refine_curve"] for m in over_seeds[r]] for r in refined},
                               args.out / "negatives_top_share.png", **look)
    all_metrics = numbers_only(table)
    write_json(args.out / "all_metrics.json", all_metrics)
    write_json(args.out / "metrics.json", {model: {k: v for k, v in row.items() if k in HEADLINE}
                                           for model, row in all_metrics.items()})
    log.info("wrote %s: %d rows", args.out, len(table))


if __name__ == "__main__":
    sys.exit(run(main))
