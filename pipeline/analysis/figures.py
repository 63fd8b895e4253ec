"""The report's figures, written as PNG with one look per model across every figure.

Every figure takes, per model, a list with one entry per training seed (one entry for a model that ran once) and
draws the mean over seeds with a band of one standard deviation (none for one seed). Every figure also takes
`styles` (from `model_styles`, built once from params: a model has the same colour, marker and dashes in each
figure) and `stamp` (a footer naming the code and params that made it; the report stage builds it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from pipeline.atomic import atomic_path  # noqa: E402

# tab10 without its grey (random-init's), then tab20's light tones without theirs: a model keeps its colour when
# models are appended to params, up to 18 of them (then husl hues, distinct but all reassigned)
_QUALITATIVE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
                "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
BASELINE_STYLES = {"random-init": ("#8c8c8c", "", ":"), "pixels": ("#000000", "", "-.")}  # colour, marker, line
# refinements of one source often lie on top of each other: each gets its own marker and dash pattern
_REFINED_MARKERS = ("s", "^", "D", "v", "P", "X", "<", ">", "h")
_REFINED_DASHES = ((0, (5, 2)), (0, (2, 1.5)), (0, (6, 2, 1.5, 2)), (0, (1, 1)), (0, (8, 2, 2, 2, 2, 2)),
                   (0, (3, 3)), (0, (4, 1, 1, 1, 1, 1)))


@dataclass(frozen=True)
class ModelStyle:
    """How one model is drawn in every figure."""

    color: str  # hex
    marker: str  # matplotlib marker; "" = none
    linestyle: str | tuple  # matplotlib linestyle
    zorder: float  # refinements over their sources, baselines underneath


def model_styles(variants: list[str], refined: list[str], baselines: tuple[str, ...] = ("random-init", "pixels"),
                 ) -> dict[str, ModelStyle]:
    """One style per model, fixed by its place in params: pretrain variants then refinements take the qualitative
    colours in order (solid lines and circles for variants, a marker and dash pattern of its own for each
    refinement), random-init is grey and pixels black.

    Args:
        variants: the keys of pretrain.variants, in params order.
        refined: the keys of refine.variants, in params order.
        baselines: names in BASELINE_STYLES.

    Returns:
        model -> ModelStyle, in the order variants, refinements, baselines (the legend order).
    """
    models = [*variants, *refined]
    colors = (list(_QUALITATIVE) if len(models) <= len(_QUALITATIVE)
              else sns.color_palette("husl", len(models)).as_hex())
    styles = {v: ModelStyle(colors[i], "o", "-", 2.0) for i, v in enumerate(variants)}
    for j, r in enumerate(refined):
        styles[r] = ModelStyle(colors[len(variants) + j], _REFINED_MARKERS[j % len(_REFINED_MARKERS)],
                               _REFINED_DASHES[j % len(_REFINED_DASHES)], 3.0)
    for b in baselines:
        color, marker, linestyle = BASELINE_STYLES[b]
        styles[b] = ModelStyle(color, marker, linestyle, 1.0)
    return styles


def _style(styles: dict[str, ModelStyle], model: str) -> ModelStyle:
    if model not in styles:
        raise KeyError(f"figures: no style for model {model!r}; model_styles covers {sorted(styles)}")
    return styles[model]


def ordered_models(models, styles: dict[str, ModelStyle]) -> list[str]:
    """`models` in the legend order of `styles` (each checked to have a style)."""
    present = set(models)
    for m in present:
        _style(styles, m)
    return [m for m in styles if m in present]


def draw_line(ax: plt.Axes, df: pd.DataFrame, x: str, y: str, model: str, style: ModelStyle, marks: int = 12,
          shift: float = 0.0) -> None:
    """The mean of `y` over rows sharing `x` (the seeds) as a styled line, one standard deviation as a band; at most
    about `marks` markers, so dense curves (spectra) stay lines. `shift` moves the line along x (a fraction of a
    step on a discrete axis: models with equal values then sit side by side, not on top of each other)."""
    g = df.groupby(x)[y]
    mean, sd = g.mean(), g.std()  # std is NaN for one seed: no band
    mean.index = sd.index = mean.index + shift
    ax.plot(mean.index, mean.to_numpy(), label=model, color=style.color, marker=style.marker or None,
            linestyle=style.linestyle, markevery=max(1, len(mean) // marks), markersize=4.5, markeredgecolor="white",
            markeredgewidth=0.6, linewidth=1.5, zorder=style.zorder)
    if sd.notna().any():
        ax.fill_between(mean.index, (mean - sd).to_numpy(), (mean + sd).to_numpy(), color=style.color, alpha=0.12,
                        linewidth=0, zorder=style.zorder - 0.5)


def _dodge(models: list[str], styles: dict[str, ModelStyle], step: float = 0.05) -> dict[str, float]:
    """Model -> x shift for a discrete x axis (blocks, shot counts): the models with markers spread around 0 (the
    baselines, lines only, stay put)."""
    marked = [m for m in models if styles[m].marker]
    return {m: (marked.index(m) - (len(marked) - 1) / 2) * step if m in marked else 0.0 for m in models}


def save_figure(fig: plt.Figure, path: str | Path, stamp: str, legend: bool = True) -> plt.Figure:
    """Stamp `fig`, put one legend beside the panels (where a dozen models cannot hide a line), write it as PNG
    atomically and close it; returns the figure, whose artists stay readable."""
    if legend:
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", frameon=False)
    fig.text(0.995, 0.0, stamp, ha="right", va="top", fontsize=6, color="0.45")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return fig


def _mean_curve(df: pd.DataFrame, x: str, y: str) -> tuple:
    mean = df.groupby(x)[y].mean()
    return mean.index.to_numpy(), mean.to_numpy()


def panels(ncols: int, width: float, height: float, sharey: bool = False) -> tuple[plt.Figure, list[plt.Axes]]:
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), sharey=sharey, layout="constrained",
                             squeeze=False)
    return fig, list(axes[0])


def knn_blocks_figure(curves: dict[str, list[list[dict[str, float]]]], path: str | Path,
                      styles: dict[str, ModelStyle], stamp: str) -> plt.Figure:
    """Per-block k-NN accuracy on val, one panel per feature (CLS, mean patch), one line per model (variants,
    refinements and the random-init floor).

    Args:
        curves: model -> per seed, rows of {block, cls, mean_patch} (accuracies 0..1).
        path: the PNG to write.
        styles: model -> ModelStyle (model_styles).
        stamp: the footer text.

    Returns:
        The written (closed) figure.
    """
    fig, axes = panels(2, 3.6, 3.0, sharey=True)
    for ax, feature in zip(axes, ("cls", "mean_patch")):
        models = ordered_models(curves, styles)
        for model, shift in _dodge(models, styles).items():
            df = pd.DataFrame([{"block": r["block"], "knn": 100 * r[feature]} for rows in curves[model] for r in rows])
            draw_line(ax, df, "block", "knn", model, styles[model], shift=shift)
        ax.set(title=f"feature: {feature}", xlabel="block (0-based)")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel("k-NN accuracy on val (%)")
    return save_figure(fig, path, stamp)


def frequency_figure(spectra: dict[str, list[pd.DataFrame]], path: str | Path, styles: dict[str, ModelStyle],
                     stamp: str) -> plt.Figure:
    """Δ log amplitude from frequency 0 to the grid's highest (2π·floor(n/2)/n), one panel per variant, one line per
    block in shades of the variant's colour (light = shallow, full colour = deepest); a last panel draws the last
    block's linear amplitude, absolute, one line per variant (MFF's claim: higher at low, lower at high frequencies).

    Args:
        spectra: variant -> per seed, frequency.csv content (block, relative_depth, frequency (x π),
            frequency_label, dlog_amplitude, amplitude).
        path: the PNG to write.
        styles: model -> ModelStyle (model_styles).
        stamp: the footer text.

    Returns:
        The written (closed) figure.
    """
    models = ordered_models(spectra, styles)
    fig, axes = panels(len(models) + 1, 3.0, 2.8)
    for ax in axes[1:-1]:
        ax.sharey(axes[0])
    for ax, model in zip(axes, models):
        df = pd.concat(spectra[model], ignore_index=True)
        blocks = sorted(df["block"].unique())
        shades = sns.light_palette(styles[model].color, len(blocks) + 2)[2:]
        for block, shade in zip(blocks, shades):
            ax.plot(*_mean_curve(df[df["block"] == block], "frequency", "dlog_amplitude"), color=shade,
                    label=f"block {block}", linewidth=1.4)
        ax.set_title(model, color=styles[model].color, fontweight="bold")
        ax.set(xlabel="frequency (x π)")
    axes[0].set_ylabel("Δ log amplitude")
    axes[len(models) - 1].legend(frameon=False, fontsize=6, loc="best")
    last = axes[-1]
    for model in models:
        df = pd.concat(spectra[model], ignore_index=True)
        draw_line(last, df[df["block"] == df["block"].max()], "frequency", "amplitude", model, styles[model])
    ticks = df.drop_duplicates("frequency").sort_values("frequency")
    last.set_xticks(ticks["frequency"].to_list(), labels=ticks["frequency_label"].to_list())
    last.set(title="last block, linear amplitude", xlabel="frequency (per axis, diagonal)", ylabel="amplitude")
    last.legend(frameon=False, fontsize=6, loc="best")
    return save_figure(fig, path, stamp, legend=False)


def fewshot_figure(runs: dict[str, list[dict[str, dict]]], path: str | Path, styles: dict[str, ModelStyle],
                   stamp: str) -> plt.Figure:
    """Few-shot test accuracy over shots per model, the mean with a band of the std over the fixed splits and the
    seeds.

    Args:
        runs: model -> per seed, the "fewshot" entry of its details.json ({shots: {"runs": [...]}}).
        path: the PNG to write.
        styles: model -> ModelStyle (model_styles).
        stamp: the footer text.

    Returns:
        The written (closed) figure.
    """
    fig, (ax,) = panels(1, 4.8, 3.2)
    models = ordered_models(runs, styles)
    shots = sorted({int(k) for m in models for fs in runs[m] for k in fs})
    for model, shift in _dodge(models, styles).items():
        # shot counts as evenly spaced categories (1, 2, 5, 10 are close to log-spaced), so models can be dodged
        df = pd.DataFrame([{"position": shots.index(int(k)), "accuracy": 100 * a} for fs in runs[model]
                           for k, v in fs.items() for a in v["runs"]])
        draw_line(ax, df, "position", "accuracy", model, styles[model], shift=shift)
    ax.set(xlabel="images per class", ylabel="test accuracy (%)")
    ax.set_xticks(range(len(shots)), labels=[str(s) for s in shots])
    return save_figure(fig, path, stamp)


SPECTRUM_PANELS = {"raw": "raw (uncentred)", "centred": "centred (Jing et al.)",
                   "standardized": "standardized (correlation)"}


def spectrum_figure(spectra: dict[str, list[pd.DataFrame]], path: str | Path, styles: dict[str, ModelStyle],
                    stamp: str, embeddings: dict[str, list[pd.DataFrame]] | None = None) -> plt.Figure:
    """Singular values of each model's feature covariance, sorted, on a log scale (dimensional collapse shows as
    a tail that drops toward 0): one column per preprocessing (raw, centred, standardized; eval/geometry.py),
    the backbone feature in the top row and, given `embeddings`, refined models' embeddings (the last head's
    projector output) in a second row. The index axis is relative so features of different widths share a panel.

    Args:
        spectra: model -> per seed, spectrum rows of the backbone feature (index,
            log10_singular_value_<preprocessing>).
        path: the PNG to write.
        styles: model -> ModelStyle (model_styles).
        stamp: the footer text.
        embeddings: refined model -> per seed, the same rows of its embedding.

    Returns:
        The written (closed) figure.
    """
    rows = {"backbone": spectra, **({"embedding": embeddings} if embeddings else {})}
    sns.set_theme(style="whitegrid", context="paper")
    fig, grid = plt.subplots(len(rows), len(SPECTRUM_PANELS), figsize=(3.6 * len(SPECTRUM_PANELS), 2.9 * len(rows)),
                             sharey=True, layout="constrained", squeeze=False)
    for axes, (feature, curves) in zip(grid, rows.items()):
        for ax, (how, title) in zip(axes, SPECTRUM_PANELS.items()):
            for model in ordered_models(curves, styles):
                df = pd.concat([s.assign(rank=s["index"] / max(len(s) - 1, 1)) for s in curves[model]],
                               ignore_index=True)
                draw_line(ax, df, "rank", f"log10_singular_value_{how}", model, styles[model])
            ax.set(title=f"{feature}: {title}", xlabel="singular value index / feature width", ylim=(-12, None))
        axes[0].set_ylabel("log10 singular value")
    return save_figure(fig, path, stamp)
