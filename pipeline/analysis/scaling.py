"""Figures that compare models of different sizes (profiles/scaling): per-block k-NN against relative depth, each
model's curve relative to its own best block (MIM-Refiner's Figure 1 at small scale), and each refinement's gain
over its source against the source's size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.analysis.figures import ModelStyle, draw_line, ordered_models, panels, save_figure


def relative_curve(rows: list[dict], feature: str = "cls") -> pd.DataFrame:
    """Per block: relative depth (block + 1) / blocks and the k-NN accuracy as a percentage of the model's best
    block, so models of different depths and accuracies share the axes."""
    acc = np.array([r[feature] for r in rows])
    return pd.DataFrame({"relative_depth": (np.arange(len(acc)) + 1) / len(acc),
                         "relative_knn": 100 * acc / acc.max()})


def knn_relative_figure(curves: dict[str, list[list[dict]]], path: str | Path, styles: dict[str, ModelStyle],
                        stamp: str):
    """One line per model: relative k-NN (CLS, val) against relative depth (mean over seeds, one-std band).

    Args:
        curves: model -> per seed, the probe's rows of {block, cls} (accuracies 0..1).
    """
    fig, (ax,) = panels(1, 4.2, 3.0)
    for model in ordered_models(curves, styles):
        df = pd.concat([relative_curve(rows) for rows in curves[model]])
        draw_line(ax, df, "relative_depth", "relative_knn", model, styles[model])
    ax.set(xlabel="relative depth (block / blocks)", ylabel="val k-NN (CLS), % of the model's best block",
           xlim=(0, 1.02))
    return save_figure(fig, path, stamp)


def refine_gain_figure(gains: dict[str, list[tuple[float, float]]], labels: dict[str, str], path: str | Path,
                       styles: dict[str, ModelStyle], stamp: str):
    """One bar per refinement: its test k-NN gain over its source in points (the mean over seeds; the error bar
    is one standard error: the paired one of a single seed, the seeds' spread / sqrt(n) with several), labelled
    with its source's model size.

    Args:
        gains: refinement -> per seed (delta, its standard error), both as fractions.
        labels: refinement -> the x label (its name and its source's size).
    """
    names = ordered_models(gains, styles)
    fig, (ax,) = panels(1, max(3.0, 0.9 * len(names) + 1.5), 3.0)
    for i, name in enumerate(names):
        deltas = np.array([100 * d for d, _ in gains[name]])
        se = (100 * gains[name][0][1] if len(deltas) == 1 else deltas.std(ddof=1) / len(deltas) ** 0.5)
        ax.bar(i, deltas.mean(), yerr=se, color=styles[name].color, capsize=3, width=0.7, label=name)
    ax.axhline(0, color="0.3", linewidth=0.8)
    ax.set_xticks(range(len(names)), [labels[n] for n in names], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("test k-NN gain over the source (points)")
    return save_figure(fig, path, stamp, legend=False)


def size_label(name: str, model: dict) -> str:
    """`name` with the encoder's blocks x width and the decoder's blocks x width of a model's keys."""
    return (f"{name}\n{model['depth']}x{model['embed_dim']} / dec {model['decoder_depth']}x"
            f"{model['decoder_embed_dim']}")
