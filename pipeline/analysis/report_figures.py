"""The report's figures from every model's outputs over the training seeds (analysis/readers.py::read_runs)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.analysis.figures import (
    fewshot_figure,
    frequency_figure,
    knn_blocks_figure,
    model_styles,
    spectrum_figure,
)
from pipeline.analysis.readers import ResultDirs, read_baseline_spectrum
from pipeline.analysis.regimes import block_changes, recon_regimes_figure
from pipeline.analysis.scaling import knn_relative_figure, refine_gain_figure
from pipeline.analysis.training_figures import fusion_weights_figure, negatives_top_share_figure


def report_figures(runs: dict[int, dict[str, dict]], baseline_details: dict[str, dict], dirs: ResultDirs,
                   variants: list[str], refined: list[str], baselines: tuple[str, ...], out: Path, stamp: str,
                   gain_labels: dict[str, str]) -> None:
    """knn_blocks, knn_relative, recon_regimes, refine_gain, frequency, fewshot, spectrum, fusion_weights and
    negatives_top_share .png in `out`.

    Each figure has one entry per seed for every model (it draws the mean and the spread over seeds) and the
    baselines once, with one style per model from params, so a model looks the same in every figure.

    Args:
        gain_labels: refinement -> its label in refine_gain (its name and its source's model size).
        stamp: the footer of every figure. The report stage names the code (the git commit, +dirty when pipeline/
            differs from it; the stage's log line says the same) and a hash of the params it read. Trade-off: a
            rerun at the same commit writes the same bytes, so `dvc repro -f` leaves `dvc status` and git clean; a
            forced rerun after a new commit (committing the results is one) rewrites the PNGs and their hashes in
            dvc.lock with nothing else changed. A file cannot name the commit that records it: the stamp is the
            commit the run started from. The hash covers only the report's keys: a hash of all of params.yaml
            would differ after edits that never rerun the report, so a forced rerun would rewrite the PNGs; an
            upstream key changes the figures through the stage that reads it.
    """
    names = list(next(iter(runs.values())))
    over_seeds = {name: [runs[s][name] for s in runs] for name in names}
    look = {"styles": model_styles(variants, refined, baselines), "stamp": stamp}
    random_blocks = baseline_details["random-init"]["blocks"]
    knn_blocks_figure({**{name: [m["blocks"] for m in ms] for name, ms in over_seeds.items()},
                       "random-init": [random_blocks]}, out / "knn_blocks.png", **look)
    knn_relative_figure({name: [m["blocks"] for m in ms] for name, ms in over_seeds.items()}, out / "knn_relative.png",
                        **look)
    refine_gain_figure({r: [(m["extra"]["d_knn_cls_vs_pretrained"], m["extra"]["d_knn_cls_vs_pretrained_se"])
                            for m in over_seeds[r]] for r in refined}, gain_labels, out / "refine_gain.png", **look)
    recon_regimes_figure({v: [block_changes(m["blocks"], m["recon"]) for m in over_seeds[v]] for v in variants},
                         out / "recon_regimes.png", stamp)
    frequency_figure({v: [m["frequency"] for m in over_seeds[v]] for v in variants}, out / "frequency.png", **look)
    fewshot_figure({**{name: [m["details"]["fewshot"] for m in ms] for name, ms in over_seeds.items()},
                    **{name: [d["fewshot"]] for name, d in baseline_details.items()}}, out / "fewshot.png", **look)
    spectrum_figure({**{name: [m["spectrum"] for m in ms] for name, ms in over_seeds.items()},
                     **{name: [read_baseline_spectrum(dirs, name)] for name in baselines}},
                    out / "spectrum.png", **look,
                    embeddings={r: [pd.DataFrame(m["details"]["embedding_spectrum"]) for m in over_seeds[r]]
                                for r in refined if "embedding_spectrum" in over_seeds[r][0]["details"]})
    fusion_weights_figure({v: [m["fusion"] for m in over_seeds[v]] for v in variants if over_seeds[v][0]["fusion"]},
                          out / "fusion_weights.png", **look)
    negatives_top_share_figure({r: [m["refine_curve"] for m in over_seeds[r]] for r in refined},
                               out / "negatives_top_share.png", **look)
