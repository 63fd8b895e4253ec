"""What refinement changed, with its noise: a refined model against its pretrained encoder and its controls.

Accuracy deltas on the test split carry a standard error: for k-NN and linear the binomial one of two accuracies
on n test images, sqrt(a(1-a)/n + b(1-b)/n) (it ignores that both models see the same images, so it is
conservative); for few-shot the standard error of the per-split differences over the fixed splits both models
share. Controls: the pretrained encoder itself (same protocols), its best block on val (the probe's per-block
k-NN against the refined model's last block, same protocol, same split), and for a cut encoder the cut-only
control (the pretrained encoder cut at the same depth, not trained; evaluate's control_* metrics).
"""
from __future__ import annotations

from pipeline.stats import difference_se, paired_se

# the headline metrics compared (metrics.json keys of evaluate)
COMPARED = ("knn_cls", "fewshot_1")


def _fewshot_runs(details: dict, shots: str) -> list[float]:
    return details["fewshot"][shots]["runs"]


def metric_delta(metric: str, refined: dict, other: dict, n_test: int) -> tuple[float, float]:
    """(delta, its standard error) of one evaluate metric; `refined` and `other` are {"eval", "details"}."""
    a, b = refined["eval"][metric], other["eval"][metric]
    if metric.startswith("fewshot_"):
        shots = metric.split("_", 1)[1]
        return a - b, paired_se(_fewshot_runs(refined["details"], shots), _fewshot_runs(other["details"], shots))
    return a - b, difference_se(a, n_test, b, n_test)


def refinement_deltas(refined: dict, pretrained: dict, val_size: int) -> dict[str, float]:
    """Columns d_<metric>_vs_<control> and their _se for one refined model.

    Args:
        refined, pretrained: {"eval": metrics.json, "details": details.json, "blocks": probe rows (val)}; a cut
            refined model's details hold "control" (the cut-only control's protocols) and its eval control_*.
        val_size: the probe's validation images (the n of the per-block k-NN).
    """
    n = refined["details"]["test_size"]
    out: dict[str, float] = {}
    for metric in COMPARED:
        out[f"d_{metric}_vs_pretrained"], out[f"d_{metric}_vs_pretrained_se"] = metric_delta(
            metric, refined, pretrained, n)
        if "control" in refined["details"]:
            control = {"eval": {metric: refined["eval"][f"control_{metric}"]}, "details": refined["details"]["control"]}
            out[f"d_{metric}_vs_control"], out[f"d_{metric}_vs_control_se"] = metric_delta(metric, refined, control, n)
    # val k-NN: the refined model's last block against the pretrained encoder's best block (the probe's numbers)
    last, best = refined["blocks"][-1]["cls"], max(r["cls"] for r in pretrained["blocks"])
    out["d_val_knn_vs_best_block"] = last - best
    out["d_val_knn_vs_best_block_se"] = difference_se(last, val_size, best, val_size)
    return out


def _pm(row: dict, col: str) -> str:
    """'+1.2 ± 0.6' in points, or blank when the column is missing or NaN."""
    v, se = row.get(col), row.get(f"{col}_se")
    if v is None or v != v:
        return ""
    return f"{100 * v:+.1f} ± {100 * se:.1f}"


def deltas_markdown(rows: list[dict]) -> str:
    """The refinement table of summary.md: per refined model, its deltas with standard errors (in points)."""
    cols = ["model", "pretrained", "depth", "heads from block", "EMA pretrained share", "k-NN vs pretrained",
            "1-shot vs pretrained", "val k-NN vs best block", "k-NN vs cut-only control", "1-shot vs cut-only control",
            "k-NN EMA / online"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if not isinstance(r.get("objective"), str):
            continue
        online = r.get("online_knn_cls")
        cells = [r["model"], r["pretrained"], str(int(r["depth"])), str(int(r["first_head_block"])),
                 f"{100 * r['ema_pretrained_share']:.2f}%",
                 _pm(r, "d_knn_cls_vs_pretrained"), _pm(r, "d_fewshot_1_vs_pretrained"),
                 _pm(r, "d_val_knn_vs_best_block"), _pm(r, "d_knn_cls_vs_control"), _pm(r, "d_fewshot_1_vs_control"),
                 f"{100 * r['knn_cls']:.1f} / {100 * online:.1f}" if online == online and online is not None else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
