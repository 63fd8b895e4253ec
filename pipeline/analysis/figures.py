"""Seaborn figures written as PNG."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from pipeline.atomic import atomic_path  # noqa: E402


def knn_blocks_figure(probes: dict[str, dict], path: str | Path) -> None:
    """Per-block k-NN accuracy, one panel per feature, one line per variant plus the random-init floor."""
    rows = []
    for variant, probe in probes.items():
        for r in probe["rows"]:
            for feature in ("cls", "mean_patch"):
                rows.append({"block": r["block"], "feature": feature, "model": variant, "knn": 100 * r[feature]})
                if variant == next(iter(probes)):
                    rows.append({"block": r["block"], "feature": feature, "model": "random-init",
                                 "knn": 100 * r[f"random_{feature}"]})
    df = pd.DataFrame(rows)
    sns.set_theme(style="whitegrid", context="paper")
    grid = sns.relplot(df, x="block", y="knn", hue="model", col="feature", kind="line", marker="o",
                       height=3, aspect=1.3)
    grid.set_axis_labels("block (0-based)", "k-NN accuracy on val (%)")
    with atomic_path(path) as tmp:
        grid.savefig(tmp, format="png", dpi=120)
    plt.close(grid.figure)
