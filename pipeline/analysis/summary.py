"""The comparison table: one row per model, one column per metric."""
from __future__ import annotations

import pandas as pd

from pipeline.models.vit import POOLS


def summary_table(probes: dict[str, dict], pretrains: dict[str, dict]) -> pd.DataFrame:
    """Rows for each variant's pretrained encoder and one random-init row (the floor).

    Args:
        probes: variant -> blocks.json content.
        pretrains: variant -> pretrain metrics.json content.
    """
    rows = []
    for variant, probe in probes.items():
        for init in ("pretrained", "random"):
            prefix = "" if init == "pretrained" else "random_"
            row = {"model": variant if init == "pretrained" else "random-init", "variant": variant, "init": init}
            for pool in POOLS:
                curve = [r[prefix + pool] for r in probe["rows"]]
                best = max(range(len(curve)), key=lambda b: (curve[b], -b))
                row.update({f"knn_{pool}_best": curve[best], f"knn_{pool}_best_block": best,
                            f"knn_{pool}_last": curve[-1]})
            if init == "pretrained":
                row.update({"depth": probe["depth"], "pretrain_loss": pretrains[variant]["loss"]})
            rows.append(row)
    table = pd.DataFrame(rows)
    # one random-init row: all variants share the architecture, so their floors coincide
    return pd.concat([table[table.init == "pretrained"], table[table.init == "random"].head(1)], ignore_index=True)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-markdown rendering, accuracies as percentages with one decimal."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float) and pd.isna(v):
                cells.append("")
            elif c.startswith("knn_") and not c.endswith("_block"):
                cells.append(f"{100 * v:.1f}")
            elif isinstance(v, float):
                cells.append(f"{v:.4g}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
