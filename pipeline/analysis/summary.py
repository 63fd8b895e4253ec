"""The comparison table: one row per model (each variant, random-init, raw pixels), one column per metric."""
from __future__ import annotations

import pandas as pd

# accuracy-like columns are shown as percentages; the rest as numbers
PERCENT_PREFIXES = ("knn", "linear", "fewshot", "kmeans_acc", "finetune", "val_knn")


def best_block(curve: list[float]) -> int:
    """The best block of a curve; ties go to the shallower block."""
    return max(range(len(curve)), key=lambda b: (curve[b], -b))


def val_knn(rows: list[dict[str, float]]) -> dict[str, float]:
    """The probe's CLS curve on val summarized: best accuracy, its block, and the last block's accuracy."""
    curve = [r["cls"] for r in rows]
    b = best_block(curve)
    return {"val_knn_best": curve[b], "val_knn_best_block": b, "val_knn_last": curve[-1]}


def summary_table(models: dict[str, dict], random_blocks: list[dict[str, float]],
                  baselines: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Rows for each model the DAG trained (pretrained and refined variants), then random-init and raw pixels.

    Args:
        models: name -> {"eval": evaluate metrics.json (test-split protocols), "blocks": the probe's per-block
            rows on val, "extra": further columns (depth, pretraining loss, Fourier statistic, refine metrics)}.
        random_blocks: the random-init encoder's per-block k-NN rows (baselines details.json).
        baselines: "random-init" | "pixels" -> baselines metrics.json entries.
    """
    rows = [{"model": name, **m["eval"], **val_knn(m["blocks"]), **m["extra"]} for name, m in models.items()]
    rows.append({"model": "random-init", **baselines["random-init"], **val_knn(random_blocks)})
    rows.append({"model": "pixels", **baselines["pixels"]})
    table = pd.DataFrame(rows)
    first_cols = ["model", "knn_cls", "knn_mean_patch", "linear"]
    first_cols += sorted((c for c in table if c.startswith("fewshot_")), key=lambda c: int(c.split("_")[1]))
    first_cols += [c for c in ("kmeans_acc", "kmeans_nmi", "kmeans_ari", "finetune", "rankme", "hard_rank",
                               "alignment", "uniformity") if c in table]
    return table[first_cols + [c for c in table if c not in first_cols]]


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-markdown rendering: accuracies in percent with one decimal, blanks where a metric does not apply."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float) and pd.isna(v):
                cells.append("")
            elif c.startswith(PERCENT_PREFIXES) and not c.endswith("_block"):
                cells.append(f"{100 * v:.1f}")
            elif isinstance(v, float) and not float(v).is_integer():
                cells.append(f"{v:.4g}")
            else:
                cells.append(str(int(v)) if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
