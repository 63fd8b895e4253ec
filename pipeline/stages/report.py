"""report: the comparison table, figures and top-level metrics from every variant's outputs."""
from __future__ import annotations

import logging
import sys

from pipeline.analysis.readers import ResultDirs, read_baselines, read_runs
from pipeline.analysis.report_figures import report_figures
from pipeline.analysis.scaling import size_label
from pipeline.analysis.seeds import aggregate_table
from pipeline.analysis.summary import numbers_only, summary_markdown, summary_table
from pipeline.atomic import write_json, write_text
from pipeline.config import variant_model
from pipeline.stages.runner import code_version, fingerprint, load_stage_params, run, stage_parser

log = logging.getLogger(__name__)

# the params keys this stage reads: its rule's params in rules/ (pipeline/deps.py), and so its dvc.yaml params
PARAMS = ("model", "pretrain.variants", "refine.variants", "seeds")

BASELINES = ("random-init", "pixels")  # run once (the data seed), not per training seed
# the DVC metrics file (metrics.json) holds these per model, so `dvc metrics show` and `dvc exp show` stay a
# terminal-wide table; all_metrics.json (a plain output) holds every number for pipeline.compare and the full view
HEADLINE = ("knn_cls", "linear", "fewshot_1", "fewshot_10", "finetune", "val_knn_best")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("report", __doc__, False, {
        "probe": "results/probe",
        "pretrain": "results/pretrain",
        "analyze": "results/analyze",
        "evaluate": "results/evaluate",
        "refine": "results/refine",
        "reconstruct": "results/reconstruct",
        "plots": "results/plots (reads spectrum/ and refine_curve/)",
        "out": "results/report",
    })
    args = parser.parse_args(argv)
    p = load_stage_params("report", PARAMS, args.params)
    variants, refined = list(p["pretrain"]["variants"]), p["refine"]["variants"]
    dirs = ResultDirs(args.probe, args.pretrain, args.analyze, args.evaluate, args.refine, args.plots,
                      args.reconstruct)

    runs = read_runs(dirs, p["seeds"], variants, refined)  # training seed -> model -> its outputs
    baselines, details = read_baselines(dirs)
    # one table per seed (deltas pair each refined model with its source of the same seed), then mean, std, n
    table = aggregate_table([summary_table(models, details["random-init"]["blocks"], baselines, details)
                             for models in runs.values()], single=BASELINES)
    write_text(args.out / "summary.csv", table.to_csv(index=False, float_format="%.6g"))
    write_text(args.out / "summary.md", summary_markdown(table))
    # the figures' footer: the code and this stage's params (report_figures says why)
    stamp = f"code {code_version()} · report params {fingerprint(p)[:8]}"
    sizes = {r: size_label(r, variant_model(p["model"], p["pretrain"]["variants"][spec["pretrained"]]))
             for r, spec in refined.items()}
    report_figures(runs, details, dirs, variants, list(refined), BASELINES, args.out, stamp, sizes)
    all_metrics = numbers_only(table)
    write_json(args.out / "all_metrics.json", all_metrics)
    write_json(args.out / "metrics.json", {model: {k: v for k, v in row.items() if k in HEADLINE}
                                           for model, row in all_metrics.items()})
    log.info("wrote %s: %d rows", args.out, len(table))


if __name__ == "__main__":
    sys.exit(run(main))
