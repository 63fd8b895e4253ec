"""MIM-Refiner's three regimes of blocks (arXiv 2402.10093, its Figure 3): from block to block, how the k-NN
accuracy (probe) and the per-block reconstruction loss (reconstruct) change, each normalized by its largest
change. Early blocks improve both; middle blocks raise k-NN while reconstruction barely moves; late blocks
improve reconstruction while k-NN falls (they serve the pixel decoder).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.analysis.figures import panels, save_figure

# a normalized reconstruction change below this share of the largest one "barely moves" (the middle regime)
FLAT = 0.25
REGIMES = {"early": "#c7e9c0", "middle": "#fdd0a2", "late": "#dadaeb"}  # the figure's shading per regime


def block_changes(knn_rows: list[dict], recon_rows: list[dict], feature: str = "cls") -> pd.DataFrame:
    """One row per transition from block b-1 to block b (b >= 1): knn_change (accuracy points), recon_gain (the
    drop of the reconstruction loss: positive = better), each also divided by its largest absolute value
    (knn_norm, recon_norm), and the regime (early, middle, late, or "" when none fits)."""
    knn = np.array([100 * r[feature] for r in knn_rows])
    loss = np.array([r["loss"] for r in recon_rows])
    if len(knn) != len(loss):
        raise ValueError(f"regimes: {len(knn)} probed blocks but {len(loss)} reconstructed ones")
    dk, dr = np.diff(knn), -np.diff(loss)
    nk = dk / max(np.abs(dk).max(initial=0.0), 1e-12)
    nr = dr / max(np.abs(dr).max(initial=0.0), 1e-12)
    return pd.DataFrame({"block": np.arange(1, len(knn)), "knn_change": dk, "recon_gain": dr, "knn_norm": nk,
                         "recon_norm": nr, "regime": [regime(k, r) for k, r in zip(nk, nr)]})


def regime(knn_norm: float, recon_norm: float) -> str:
    """The regime of one transition from its normalized changes (FLAT is "barely moves")."""
    if knn_norm > 0 and recon_norm > FLAT:
        return "early"
    if knn_norm > 0 and abs(recon_norm) <= FLAT:
        return "middle"
    if knn_norm <= 0 and recon_norm > FLAT:
        return "late"
    return ""


def recon_regimes_figure(changes: dict[str, list[pd.DataFrame]], path: str | Path, stamp: str):
    """One panel per pretrained variant: the normalized k-NN change and reconstruction gain per transition (mean
    over seeds, each seed's as thin lines), shaded by the regime of the mean.

    Args:
        changes: variant -> per seed, block_changes' frame.
    """
    fig, axes = panels(max(1, len(changes)), 3.4, 2.8, sharey=True)
    for ax, (variant, frames) in zip(axes, changes.items()):
        both = pd.concat(frames)
        mean = both.groupby("block")[["knn_norm", "recon_norm"]].mean()
        for b, (k, r) in mean.iterrows():
            name = regime(k, r)
            if name:
                ax.axvspan(b - 0.5, b + 0.5, color=REGIMES[name], alpha=0.6, linewidth=0,
                           label=f"{name} blocks" if name not in ax.get_legend_handles_labels()[1] else None)
        for column, color, label in (("knn_norm", "#1f77b4", "k-NN change"),
                                     ("recon_norm", "#d62728", "reconstruction gain")):
            for f in frames if len(frames) > 1 else []:
                ax.plot(f["block"], f[column], color=color, alpha=0.3, linewidth=0.8)
            ax.plot(mean.index, mean[column], color=color, marker="o", markersize=4, linewidth=1.6, label=label)
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set(title=variant, xlabel="block b (change from b-1)")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel("change / its largest change")
    handles = {}
    for ax in axes:  # one legend entry per label over every panel (a regime may show in one panel only)
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="outside right upper", frameon=False)
    return save_figure(fig, path, stamp, legend=False)
