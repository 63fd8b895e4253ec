"""Seaborn figures written as PNG.

Every figure takes, per model, a list with one entry per training seed (one entry for a model that ran once) and
draws the mean over seeds with the spread of one standard deviation (errorbar="sd"); one seed draws no band.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from pipeline.atomic import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: str | Path, legend_of: plt.Axes | None = None) -> None:
    """Write `fig` as PNG atomically and close it; `legend_of`'s legend moves beside the plot, where a dozen
    models' lines cannot hide it (the tight bounding box keeps it and every label in the file)."""
    if legend_of is not None and legend_of.get_legend() is not None:
        sns.move_legend(legend_of, "upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def knn_blocks_figure(curves: dict[str, list[list[dict[str, float]]]], path: str | Path) -> None:
    """Per-block k-NN accuracy, one panel per feature, one line per model (variants and the random-init floor).

    Args:
        curves: model -> per seed, rows of {block, cls, mean_patch} (accuracies 0..1).
    """
    rows = [{"block": r["block"], "feature": feature, "model": model, "knn": 100 * r[feature]}
            for model, seeds in curves.items() for model_rows in seeds for r in model_rows
            for feature in ("cls", "mean_patch")]
    df = pd.DataFrame(rows)
    sns.set_theme(style="whitegrid", context="paper")
    grid = sns.relplot(df, x="block", y="knn", hue="model", col="feature", kind="line", marker="o",
                       errorbar="sd", height=3, aspect=1.3)
    grid.set_axis_labels("block (0-based)", "k-NN accuracy on val (%)")
    _save(grid.figure, path)


def frequency_figure(spectra: dict[str, list[pd.DataFrame]], path: str | Path) -> None:
    """Δ log amplitude from frequency 0 to π, one panel per variant, one line per block (dark = deep).

    Args:
        spectra: variant -> per seed, frequency.csv content (block, relative_depth, frequency, dlog_amplitude).
    """
    df = pd.concat([s.assign(model=v) for v, seeds in spectra.items() for s in seeds], ignore_index=True)
    sns.set_theme(style="whitegrid", context="paper")
    grid = sns.relplot(df, x="frequency", y="dlog_amplitude", hue="block", col="model", kind="line",
                       palette="viridis", errorbar="sd", height=3, aspect=1.1)
    grid.set_axis_labels("frequency (x π)", "Δ log amplitude")
    _save(grid.figure, path)


def fusion_weights_figure(weights: dict[str, list[dict[str, float]]], path: str | Path) -> None:
    """MFF's normalized weight per fused block, one bar group per variant (mean over seeds, sd as error bars); a
    note when no variant fuses.

    Args:
        weights: variant -> per seed, {block: weight}.
    """
    rows = [{"model": v, "block": int(b), "weight": w} for v, seeds in weights.items() for ws in seeds
            for b, w in ws.items()]
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(4.5, 3))
    if rows:
        sns.barplot(pd.DataFrame(rows), x="block", y="weight", hue="model", errorbar="sd", ax=ax)
        ax.set(xlabel="fused block (0-based)", ylabel="normalized weight")
    else:
        ax.text(0.5, 0.5, "no MFF variant in params.yaml", ha="center", va="center")
        ax.set_axis_off()
    _save(fig, path, legend_of=ax)


def fewshot_figure(runs: dict[str, list[dict[str, dict]]], path: str | Path) -> None:
    """Few-shot accuracy over shots per model, mean with the std over the fixed splits and the seeds as error bars.

    Args:
        runs: model -> per seed, the "fewshot" entry of its details.json ({shots: {"runs": [...]}}).
    """
    rows = [{"model": m, "shots": int(k), "accuracy": 100 * a} for m, seeds in runs.items() for fs in seeds
            for k, v in fs.items() for a in v["runs"]]
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    sns.lineplot(pd.DataFrame(rows), x="shots", y="accuracy", hue="model", marker="o", errorbar="sd", ax=ax)
    ax.set(xscale="log", xlabel="images per class", ylabel="test accuracy (%)")
    ax.set_xticks(sorted({r["shots"] for r in rows}), labels=[str(s) for s in sorted({r["shots"] for r in rows})])
    _save(fig, path, legend_of=ax)


def spectrum_figure(spectra: dict[str, list[pd.DataFrame]], path: str | Path) -> None:
    """Singular values of each model's feature covariance, sorted, on a log scale (dimensional collapse shows as
    a tail that drops toward 0); the index axis is relative so features of different widths share one panel.

    Args:
        spectra: model -> per seed, spectrum rows (index, singular_value, log10_singular_value).
    """
    df = pd.concat([s.assign(model=m, rank=s["index"] / max(len(s) - 1, 1)) for m, seeds in spectra.items()
                    for s in seeds], ignore_index=True)
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    sns.lineplot(df, x="rank", y="log10_singular_value", hue="model", errorbar="sd", ax=ax)
    ax.set(xlabel="singular value index / feature width", ylabel="log10 singular value", ylim=(-12, None))
    _save(fig, path, legend_of=ax)
