"""The report's figures of what happened during training: MFF's fusion weights at the end of pretraining and the
hardness of the refinement's negatives per epoch (figures.py has the per-model styles and helpers they share)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from pipeline.analysis.figures import ModelStyle, draw_line, ordered_models, panels, save_figure


def fusion_weights_figure(weights: dict[str, list[dict[str, float]]], path: str | Path,
                          styles: dict[str, ModelStyle], stamp: str) -> plt.Figure:
    """MFF's normalized weight per fused block against the uniform 1/n line, one panel per variant: bars run from
    1/n to the mean over seeds (sd as error bars), the axis spans the deviation, not 0..1, and the right axis reads
    it in % of uniform; a note when no variant fuses.

    Args:
        weights: variant -> per seed, {block: weight}.
        path: the PNG to write.
        styles: model -> ModelStyle (model_styles).
        stamp: the footer text.

    Returns:
        The written (closed) figure.
    """
    models = ordered_models(weights, styles)
    if not models:
        fig, axes = panels(1, 4.5, 3.0)
        axes[0].text(0.5, 0.5, "no MFF variant in params.yaml", ha="center", va="center")
        axes[0].set_axis_off()
        return save_figure(fig, path, stamp, legend=False)
    fig, axes = panels(len(models), 3.6, 3.0)
    for ax, model in zip(axes, models):
        df = pd.DataFrame([{"block": int(b), "weight": w} for ws in weights[model] for b, w in ws.items()])
        g = df.groupby("block")["weight"]
        mean, sd = g.mean(), g.std().fillna(0.0)  # one seed: no spread
        n = len(mean)
        uniform = 1.0 / n
        pos = range(n)
        ax.bar(pos, (mean - uniform).to_numpy(), bottom=uniform, color=styles[model].color, width=0.6,
               yerr=sd.to_numpy() if len(weights[model]) > 1 else None, capsize=3, error_kw={"linewidth": 0.8})
        ax.axhline(uniform, color="black", linestyle="--", linewidth=1.0, label=f"uniform 1/{n} = {uniform:.3g}")
        # the deviation decides the span (a floor keeps exactly uniform weights from a zero-height axis)
        half = max(float(((mean - uniform).abs() + sd).max()), 1e-4 * uniform) * 1.4
        ax.set_ylim(uniform - half, uniform + half)
        ax.set_xticks(list(pos), labels=[str(b) for b in mean.index])
        ax.set(xlabel="fused block (0-based)", ylabel="normalized weight")
        ax.set_title(model, color=styles[model].color, fontweight="bold")
        ax.ticklabel_format(axis="y", useOffset=False)
        right = ax.secondary_yaxis("right", functions=(lambda w, n=n: (w * n - 1) * 100,
                                                       lambda r, n=n: (r / 100 + 1) / n))
        right.set_ylabel("vs uniform (%)")
        ax.legend(frameon=False, fontsize=7, loc="upper left")
    return save_figure(fig, path, stamp, legend=False)


def negatives_top_share_figure(curves: dict[str, list[pd.DataFrame]], path: str | Path,
                               styles: dict[str, ModelStyle], stamp: str) -> plt.Figure:
    """MoCHi's hardness analysis over refinement: the share of the negatives' softmax mass held by the hardest 1%
    and 5% of them, per epoch (both phases, epochs counted on), one line per refined model that logs it; a note
    when none does.

    Args:
        curves: refined model -> per seed, its refine_curve rows (epoch, neg_top1_share, neg_top5_share, ...).
        path: the PNG to write.
        styles: model -> ModelStyle (model_styles).
        stamp: the footer text.

    Returns:
        The written (closed) figure.
    """
    models = [m for m in ordered_models(curves, styles) if all("neg_top1_share" in c for c in curves[m])]
    if not models:
        fig, axes = panels(1, 4.5, 3.0)
        axes[0].text(0.5, 0.5, "no refinement logged the negatives' top share", ha="center", va="center")
        axes[0].set_axis_off()
        return save_figure(fig, path, stamp, legend=False)
    fig, axes = panels(2, 3.6, 3.0, sharey=True)
    for ax, (column, title) in zip(axes, {"neg_top1_share": "hardest 1%", "neg_top5_share": "hardest 5%"}.items()):
        for model in models:
            draw_line(ax, pd.concat(curves[model], ignore_index=True), "epoch", column, model, styles[model])
        ax.set(title=title, xlabel="refinement epoch")
    axes[0].set_ylabel("share of the negatives' softmax mass")
    return save_figure(fig, path, stamp)
