"""report: the comparison table, figures and top-level metrics from every variant's outputs."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.analysis.figures import knn_blocks_figure
from pipeline.analysis.summary import markdown_table, summary_table
from pipeline.atomic import write_json, write_text
from pipeline.errors import DataError
from pipeline.stages.runner import load_stage_params, run

log = logging.getLogger(__name__)

# the params keys this stage reads; pipeline/dag.py reads this tuple for Snakefile and dvc.yaml
PARAMS = ("pretrain.variants",)


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"report: missing input {path} (run the stage that writes it)")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.stages.report", description=__doc__)
    parser.add_argument("--probe", required=True, type=Path, help="results/probe")
    parser.add_argument("--pretrain", required=True, type=Path, help="results/pretrain")
    parser.add_argument("--out", required=True, type=Path, help="results/report")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    variants = list(load_stage_params("report", PARAMS, args.params)["pretrain"]["variants"])

    probes = {v: read_json(args.probe / v / "blocks.json") for v in variants}
    pretrains = {v: read_json(args.pretrain / v / "metrics.json") for v in variants}
    table = summary_table(probes, pretrains)
    write_text(args.out / "summary.csv", table.to_csv(index=False, float_format="%.6g"))
    write_text(args.out / "summary.md", "# Summary\n\nk-NN accuracy (%) on the validation split; blocks are "
                                        "0-based.\n\n" + markdown_table(table))
    knn_blocks_figure(probes, args.out / "knn_blocks.png")
    metrics = {row["model"]: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()
                              if k not in ("model", "variant", "init") and v == v}
               for row in table.to_dict("records")}
    write_json(args.out / "metrics.json", metrics)
    log.info("wrote %s: %d rows", args.out, len(table))


if __name__ == "__main__":
    sys.exit(run(main))
