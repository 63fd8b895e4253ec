"""The comparison table: one row per model (each variant, random-init, raw pixels), one column per metric; and
summary.md, its markdown rendering with the refinement and analyses tables."""
from __future__ import annotations

import pandas as pd

from pipeline.analysis.deltas import deltas_markdown
from pipeline.analysis.seeds import SPREAD_NOTE, markdown_with_spread
from pipeline.records import fewshot_protocols, fewshot_record
from pipeline.stats import first_argmax, mean_se

# accuracy-like columns are shown as percentages; the rest as numbers
PERCENT_PREFIXES = ("knn", "linear", "fewshot", "kmeans_acc", "cluster_head_acc", "finetune", "val_knn")
# after a number whose grid capped its val selection (pipeline/eval/selection.py; column edge_picks names the key)
EDGE_MARK = "⚠"
# the collapse analysis, each name saying its preprocessing (eval/geometry.py); embedding_*: a refined model's
# last head's projector output, the rest the backbone feature
COLLAPSE_COLUMNS = tuple(f"{feature}{metric}_{how}" for feature in ("", "embedding_")
                         for metric in ("rankme", "hard_rank", "top_eigen_share")
                         for how in ("raw", "centred", "standardized"))
# the table of summary.md's analyses section: collapse (RankMe and the top eigenvalue's share per preprocessing),
# the last block's linear Fourier amplitude (analyze) and MoCHi's negative hardness at the end of refinement
ANALYSIS_COLUMNS = (*(c for c in COLLAPSE_COLUMNS if "hard_rank" not in c), "amplitude_f0_last",
                    "amplitude_fmax_last", "dlogamp_fmax_last", "hessian_top_eig", "recon_loss_last",
                    "recon_best_block", "refine_neg_top1_share", "refine_neg_top5_share")


def val_knn(rows: list[dict[str, float]]) -> dict[str, float]:
    """The probe's CLS curve on val summarized: best accuracy, its block, and the last block's accuracy."""
    curve = [r["cls"] for r in rows]
    b = first_argmax(curve)
    return {"val_knn_best": curve[b], "val_knn_best_block": b, "val_knn_last": curve[-1]}


def edge_picks(details: dict) -> str | float:
    """The metrics of an evaluate details.json whose grid capped the val selection (its record's "edge"), each with
    the params key to widen ("linear (widen evaluate.linear.lrs); fewshot_2 (widen evaluate.fewshot_cs)"), or NaN if
    none. Protocols without a selection record (details.json written before grids recorded them) are not marked."""
    picks = {"linear": details.get("linear", {}).get("selection"),
             **{f"fewshot_{shots}": v.get("selection") for shots, v in details.get("fewshot", {}).items()}}
    return "; ".join(f"{m} (widen {sel['key']})" for m, sel in picks.items() if sel and sel["edge"]) or float("nan")


def linear_probe_label(details: dict) -> str | float:
    """How the linear number was made: "features" (heads on precomputed centre-crop features) or "augmented:
    <feature>" (MIM-Refiner's probe and the grid feature val picked); NaN for files that do not say."""
    linear = details.get("linear", {})
    mode = linear.get("mode")
    if mode is None:
        return float("nan")
    return f"augmented: {linear['feature']}" if mode == "augmented" else mode


def split_se(details: dict) -> dict[str, float]:
    """One run's few-shot noise, for every protocol it holds: <metric>_split<i> (the accuracy on fixed split i, the
    same images for every model, so two models' deltas pair split by split) and <metric>_split_se (the standard
    error of the mean over the splits), where <metric> is fewshot_<shots> (the headline protocol) or
    fewshot_<protocol>_<shots>."""
    out = {}
    for protocol in fewshot_protocols(details):
        for shots, rec in fewshot_record(details, protocol).items():
            metric, runs = f"fewshot_{protocol + '_' if protocol else ''}{shots}", rec.get("runs", [])
            out.update({f"{metric}_split{i}": r for i, r in enumerate(runs)})
            if len(runs) > 1:
                out[f"{metric}_split_se"] = mean_se(runs)
    return out


def summary_table(models: dict[str, dict], random_blocks: list[dict[str, float]],
                  baselines: dict[str, dict[str, float]], baseline_details: dict[str, dict] | None = None
                  ) -> pd.DataFrame:
    """Rows for each model the DAG trained (pretrained and refined variants), then random-init and raw pixels.

    k-NN columns: knn_<protocol>_<pool> for each protocol of pipeline/eval/knn.py, and knn_<pool> for the one
    params evaluate.knn_headline names. A column edge_picks (only when some grid capped its selection) names the
    metrics whose val accuracy was best at an end of the grid, beyond noise, and the key to widen; markdown_table
    marks them.

    Args:
        models: name -> {"eval": evaluate metrics.json (test-split protocols), "blocks": the probe's per-block
            rows on val, "details": evaluate details.json, "extra": further columns (depth, pretraining loss,
            Fourier statistic, refine metrics)} and "val_size" (the probe's validation images).
        random_blocks: the random-init encoder's per-block k-NN rows (baselines details.json).
        baselines: "random-init" | "pixels" -> baselines metrics.json entries.
        baseline_details: the baselines details.json, for their edge picks (None: not marked).
    """
    rows = [{"model": name, **m["eval"], **val_knn(m["blocks"]), **m["extra"], "edge_picks": edge_picks(m["details"]),
             "linear_probe": linear_probe_label(m["details"]), **split_se(m["details"])} for name, m in models.items()]
    rows.append({"model": "random-init", **baselines["random-init"], **val_knn(random_blocks)})
    rows.append({"model": "pixels", **baselines["pixels"]})
    for row in rows[-2:]:
        row["edge_picks"] = edge_picks(baseline_details[row["model"]]) if baseline_details else float("nan")
        row["linear_probe"] = linear_probe_label(baseline_details[row["model"]]) if baseline_details else float("nan")
        row.update(split_se(baseline_details[row["model"]]) if baseline_details else {})
    # the split sizes, for the binomial error of any accuracy (pipeline.compare); every model sees the same splits
    sizes = next(({"test_size": m["details"]["test_size"], "val_size": m["val_size"]} for m in models.values()
                  if "test_size" in m["details"] and "val_size" in m), {})
    for row in rows:
        row.update(sizes)
    table = pd.DataFrame(rows)
    if table["edge_picks"].isna().all():
        table = table.drop(columns="edge_picks")
    first_cols = ["model", "knn_cls", "knn_mean_patch"]
    first_cols += sorted(c for c in table if c.startswith("knn_") and c not in first_cols)
    first_cols += ["linear"] + (["linear_probe"] if "linear_probe" in table else [])
    first_cols += sorted((c for c in table if c.startswith("fewshot_")), key=_fewshot_order)
    first_cols += [c for c in ("kmeans_acc", "kmeans_nmi", "kmeans_ari", "cluster_head_acc", "cluster_head_nmi",
                               "cluster_head_ari", "finetune", *COLLAPSE_COLUMNS, "alignment", "uniformity")
                   if c in table]
    return table[first_cols + [c for c in table if c not in first_cols]]


def _fewshot_order(column: str) -> tuple[int, str, int]:
    """fewshot_<shots>[_split..] (the headline protocol) first, then fewshot_<protocol>_<shots>, by shots."""
    parts = column.split("_")
    if parts[1].isdigit():
        return 0, "", int(parts[1])
    return 1, parts[1], int(parts[2])


def _edge_metrics(cell: object) -> set[str]:
    """The metric names of an edge_picks cell (seeds aggregated join their cells with '/'), or none."""
    if not isinstance(cell, str):
        return set()
    return {item.strip().split(" ")[0] for part in cell.split("/") for item in part.split(";") if item.strip()}


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-markdown rendering: accuracies in percent with one decimal, blanks where a metric does not apply,
    and `EDGE_MARK` after a number whose grid capped its val selection (column edge_picks)."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        edges = _edge_metrics(row.get("edge_picks"))
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float) and pd.isna(v):
                cells.append("")
            elif c.startswith(PERCENT_PREFIXES) and not c.endswith("_block") and not isinstance(v, str):
                cells.append(f"{100 * v:.1f}" + (EDGE_MARK if c in edges else ""))
            elif isinstance(v, float) and not float(v).is_integer():
                cells.append(f"{v:.4g}")
            else:
                cells.append(str(int(v)) if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def numbers_only(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """model -> metric -> number, from the aggregated table: names and flags (summary.csv keeps them) and blanks
    left out, so every metrics column is numeric and means one thing."""
    return {row["model"]: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()
                           if k != "model" and isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
            for row in table.to_dict("records")}


SUMMARY_HEADER = """# Summary

Accuracies in %. knn_cls and knn_mean_patch (the headline k-NN protocol, params evaluate.knn_headline), knn_cls_prenorm
(the same on the last block's CLS before the final norm, as MIM-Refiner evaluates), knn_dino_cls (DINO's protocol:
k 20, T 0.07, raw features), linear (linear_probe says how: features = heads on precomputed centre-crop features, the
CPU default; augmented = MIM-Refiner's probe on augmented crops and the grid feature val picked), fewshot_<shots>
(the headline few-shot protocol, params evaluate.fewshot_headline; fewshot_msn_<shots> is MSN's published one:
rows centred and L2-normalized, C fixed; fewshot_tuned_<shots> picks C on val; means over the fixed splits),
kmeans_* and finetune are on the test split, with hyperparameters chosen on the validation split (⚠: a grid
capped the pick; edge_picks names the key to widen). val_knn_* is the probe's per-block k-NN (CLS, headline protocol) on the
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

Differences in accuracy points, ± one standard error and its rule: paired (both models scored the same images: the
standard error of the per-image differences, McNemar's view) for k-NN, linear and the val k-NN of the probe; splits
(the per-split differences over the shared fixed splits) for 1-shot, under the headline protocol and MSN's (msn);
binomial (as if independent, conservative) only for files that keep no per-image record. vs pretrained: the same protocols on the encoder refinement started from;
val k-NN vs best block: the refined model's last block against the pretrained encoder's best block (the probe,
CLS, validation split); vs cut-only control: the pretrained encoder cut at the refined depth and not trained
(only for a cut encoder, refine.depth); EMA pretrained share: the weight of the pretrained encoder left in the
EMA that model.pt holds; k-NN EMA / online: test k-NN of the evaluated EMA encoder and of the online one.

"""

ANALYSES_HEADER = """
## Collapse, frequency and hardness analyses

Collapse (val subset; eval/geometry.py): rankme_<p> is RankMe of the features after preprocessing p: raw (as
they are: RankMe's definition, Garrido et al. 2023), centred (minus the mean feature) or standardized (centred,
each channel divided by its std, so a few high-variance channels cannot dominate). top_eigen_share_<p> is the
largest eigenvalue's share of the covariance spectrum of the L2-normalized features after p (centred: Jing et al.
2022's spectrum); 1/width is flat, 1 is one direction. Columns without a prefix are the backbone feature the
protocols read; embedding_* is a refined model's embedding (the projector output of its last head block, where its
loss acts; spectrum.png's lower row). Frequency (pretrained encoders; analyze): the last block's linear Fourier
amplitude along the diagonal of the token grid, absolute, at frequency 0 (amplitude_f0_last) and at the highest
frequency 2π·floor(n/2)/n of the n x n grid (amplitude_fmax_last; 6π/7 on 7 x 7), and the Δ log amplitude there
relative to frequency 0 (dlogamp_fmax_last); frequency.png's last panel draws the whole spectrum. Sharpness
(pretrained encoders; analyze): hessian_top_eig is the largest eigenvalue of the Hessian of the pretraining loss at
the final weights (fixed validation images and masks, power iteration; MFF's flatter-loss claim). Reconstruction
per block (pretrained encoders; reconstruct): recon_loss_last is the val masked-patch loss of a fresh decoder trained
on the last block's visible tokens, recon_best_block the block whose decoder reconstructs best (recon_regimes.png
sets its changes beside the k-NN's). Hardness
(MoCHi, Kalantidis et al. 2020): refine_neg_top1_share / top5 the share of the negatives' softmax mass held by the
hardest 1% / 5% of them in the last epoch (the queue for moco/mochi, the batch for nna/nnclr);
negatives_top_share.png draws it per epoch.

"""

# columns left out of summary.md's main table (the refinement table or summary.csv has them)
MD_HIDDEN = ("d_", "online_", "control_", "knn_mim_refiner_", "knn_dino_mean_patch", "knn_dino_cls_prenorm",
             "rankme_centred", "rankme_standardized", "hard_rank_", "top_eigen_share_", "embedding_", "amplitude_",
             "refine_neg_top")
MD_HIDDEN_COLS = {"recon_loss_last", "recon_best_block", "kmeans_nmi", "cluster_head_nmi", "cluster_head_used",
                  "refine_cluster_entropy", "hard_rank", "alignment", "dlogamp_fmax_last", "objective", "pretrained", "depth", "first_head_block",
                  "ema_pretrained_share", "refine_pos_mass", "test_size", "val_size"}


def summary_markdown(table: pd.DataFrame) -> str:
    """summary.md from the aggregated table: the headline columns (summary.csv and metrics.json keep every one),
    the refinement table and the analyses table, each after its header."""
    main_cols = [c for c in table if not c.startswith(MD_HIDDEN) and c.removesuffix("_std") not in MD_HIDDEN_COLS
                 and "_split" not in c]
    analysis_cols = ["model", *(c for c in table if c.removesuffix("_std") in ANALYSIS_COLUMNS)]
    return (SUMMARY_HEADER + SPREAD_NOTE + markdown_with_spread(table[main_cols], markdown_table)
            + REFINEMENT_HEADER + deltas_markdown(table.to_dict("records")) + ANALYSES_HEADER
            + markdown_with_spread(table[analysis_cols], markdown_table))
