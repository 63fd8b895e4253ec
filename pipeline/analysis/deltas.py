"""What refinement changed, with its noise: a refined model against its pretrained encoder and its controls.

Accuracy deltas on the test split carry a standard error and the rule that gave it (the `_rule` column): for k-NN
and linear, both models scored the same test images, so the per-image differences pair ("paired images":
`stats.paired_images_se`, McNemar's view), with the binomial rule sqrt(a(1-a)/n + b(1-b)/n) ("binomial", which
treats the two models' errors as independent and so overstates the noise) only for files that hold no per-image
correctness; for few-shot the standard error of the per-split differences over the fixed splits both models share
("paired splits"). Controls: the pretrained encoder itself (same protocols), its best block on val (the probe's
per-block k-NN against the refined model's last block, same protocol, same split), and for a cut encoder the cut-only
control (the pretrained encoder cut at the same depth, not trained; evaluate's control_* metrics). The val k-NN
delta pairs the probe's per-image correctness of the two blocks (the same val images) where blocks.json keeps it.
"""
from __future__ import annotations

from pipeline.records import fewshot_record
from pipeline.stats import difference_se, first_argmax, paired_images_se, paired_se

# the headline metrics compared (metrics.json keys of evaluate)
COMPARED = ("knn_cls", "linear", "fewshot_1", "fewshot_msn_1")
RULE_SHORT = {"paired images": "paired", "paired splits": "splits", "binomial": "binomial"}


def _fewshot_runs(details: dict, metric: str) -> list[float]:
    """The per-split accuracies behind fewshot_<shots> (the headline protocol) or fewshot_<protocol>_<shots>."""
    *protocol, shots = metric.split("_")[1:]
    return fewshot_record(details, protocol[0] if protocol else None)[shots]["runs"]


def correctness(details: dict, metric: str) -> str | None:
    """The per-image correctness behind a test accuracy of evaluate's details.json (knn_<pool> of the headline
    protocol, linear), or None where the file holds none (older runs)."""
    if metric.startswith("knn_"):
        knn = details.get("knn", {})
        protocol = knn.get("protocols", {}).get(knn.get("headline"), {})
        return protocol.get("correct", {}).get(metric.removeprefix("knn_"))
    if metric == "linear":
        return details.get("linear", {}).get("test_correct")
    return None


def probe_correctness(blocks: dict) -> dict[str, str]:
    """val_knn_best and val_knn_last's per-image correctness (the probe's CLS k-NN on val at the first best block
    and at the last one) from a probe blocks.json, or {} where it holds none (older runs)."""
    bits = blocks.get("cls_correct")
    if not bits:
        return {}
    best = first_argmax([b.count("1") / len(b) for b in bits])  # the summary's val_knn_best block
    return {"val_knn_best": bits[best], "val_knn_last": bits[-1]}


def metric_delta(metric: str, refined: dict, other: dict, n_test: int) -> tuple[float, float, str]:
    """(delta, its standard error, the rule) of one evaluate metric; `refined` and `other` are {"eval", "details"}."""
    a, b = refined["eval"][metric], other["eval"][metric]
    if metric.startswith("fewshot_"):
        return a - b, paired_se(_fewshot_runs(refined["details"], metric),
                                _fewshot_runs(other["details"], metric)), "paired splits"
    bits_a, bits_b = correctness(refined["details"], metric), correctness(other["details"], metric)
    if bits_a and bits_b and len(bits_a) == len(bits_b) == n_test:
        return a - b, paired_images_se(bits_a, bits_b), "paired images"
    return a - b, difference_se(a, n_test, b, n_test), "binomial"


def refinement_deltas(refined: dict, pretrained: dict, val_size: int) -> dict[str, float]:
    """Columns d_<metric>_vs_<control> and their _se for one refined model.

    Args:
        refined, pretrained: {"eval": metrics.json, "details": details.json, "blocks": probe rows (val),
            "block_correct": the probe's per-block CLS correctness strings (absent in older files)}; a cut
            refined model's details hold "control" (the cut-only control's protocols) and its eval control_*.
        val_size: the probe's validation images (the n of the per-block k-NN).
    """
    n = refined["details"]["test_size"]
    out: dict[str, float] = {}
    for metric in (m for m in COMPARED if m in refined["eval"] and m in pretrained["eval"]):
        col = f"d_{metric}_vs_pretrained"
        out[col], out[f"{col}_se"], out[f"{col}_rule"] = metric_delta(metric, refined, pretrained, n)
        if "control" in refined["details"] and f"control_{metric}" in refined["eval"]:
            control = {"eval": {metric: refined["eval"][f"control_{metric}"]}, "details": refined["details"]["control"]}
            col = f"d_{metric}_vs_control"
            out[col], out[f"{col}_se"], out[f"{col}_rule"] = metric_delta(metric, refined, control, n)
    # val k-NN: the refined model's last block against the pretrained encoder's best block (the probe's numbers)
    curve = [r["cls"] for r in pretrained["blocks"]]
    b = first_argmax(curve)
    last, best = refined["blocks"][-1]["cls"], curve[b]
    out["d_val_knn_vs_best_block"] = last - best
    bits_a, bits_b = refined.get("block_correct"), pretrained.get("block_correct")
    if bits_a and bits_b and len(bits_a[-1]) == len(bits_b[b]) == val_size:  # the probe's per-image correctness
        out["d_val_knn_vs_best_block_se"] = paired_images_se(bits_a[-1], bits_b[b])
        out["d_val_knn_vs_best_block_rule"] = "paired images"
    else:  # blocks.json written before the probe kept per-image correctness
        out["d_val_knn_vs_best_block_se"] = difference_se(last, val_size, best, val_size)
        out["d_val_knn_vs_best_block_rule"] = "binomial"
    return out


def _pm(row: dict, col: str) -> str:
    """'+1.2 ± 0.6 (paired)' in points with the rule of its standard error, or blank when the column is missing
    or NaN."""
    v, se, rule = row.get(col), row.get(f"{col}_se"), row.get(f"{col}_rule")
    if v is None or v != v:
        return ""
    return f"{100 * v:+.1f} ± {100 * se:.1f}" + (f" ({RULE_SHORT.get(rule, rule)})" if isinstance(rule, str) else "")


def deltas_markdown(rows: list[dict]) -> str:
    """The refinement table of summary.md: per refined model, its deltas with standard errors (in points)."""
    cols = ["model", "pretrained", "depth", "heads from block", "EMA pretrained share", "k-NN vs pretrained",
            "linear vs pretrained", "1-shot vs pretrained", "1-shot (msn) vs pretrained", "val k-NN vs best block",
            "k-NN vs cut-only control", "1-shot vs cut-only control", "k-NN EMA / online"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if not isinstance(r.get("objective"), str):
            continue
        online = r.get("online_knn_cls")
        cells = [r["model"], r["pretrained"], str(int(r["depth"])), str(int(r["first_head_block"])),
                 f"{100 * r['ema_pretrained_share']:.2f}%",
                 _pm(r, "d_knn_cls_vs_pretrained"), _pm(r, "d_linear_vs_pretrained"),
                 _pm(r, "d_fewshot_1_vs_pretrained"), _pm(r, "d_fewshot_msn_1_vs_pretrained"),
                 _pm(r, "d_val_knn_vs_best_block"), _pm(r, "d_knn_cls_vs_control"), _pm(r, "d_fewshot_1_vs_control"),
                 f"{100 * r['knn_cls']:.1f} / {100 * online:.1f}" if online == online and online is not None else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
