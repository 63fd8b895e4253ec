"""baselines: the frozen-feature protocols on raw pixels and on a random-init encoder (the floors of the table).

Writes results/evaluate/baselines/{metrics.json, details.json}, keyed by "pixels" and "random-init", the
random-init encoder's k-NN per block on val to results/plots/knn_blocks/random-init.csv (the probe's floor), and
the covariance spectrum of each to results/plots/spectrum/{pixels,random-init}.csv.
"""
from __future__ import annotations

import logging
import sys

from pipeline.atomic import write_json, write_text
from pipeline.data.loader import device_splits
from pipeline.data.prepared import load_prepared
from pipeline.eval.collapse import collapse_analysis
from pipeline.eval.features import pooled_features
from pipeline.eval.knn import knn_protocol
from pipeline.eval.probe import block_rows, curves, probe_encoder, probe_splits
from pipeline.eval.suite import flat_metrics, frozen_protocols
from pipeline.models.mae import ModelSpec
from pipeline.models.vit import POOLS, PRENORM
from pipeline.records import records_csv
from pipeline.stages.runner import load_stage_params, run, stage_parser
from pipeline.train import device as rt

log = logging.getLogger(__name__)

# the params keys this stage reads: its rule's params in rules/ (pipeline/deps.py), and so its dvc.yaml params
PARAMS = ("seed", "runtime.device", "runtime.threads", "runtime.precision", "runtime.compile", "model", "probe",
          "evaluate")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("baselines", __doc__, False, {
        "data": "results/data/<dataset>",
        "out": "results/evaluate/baselines",
        "plots": "results/plots (the floor goes to knn_blocks/, the spectra to spectrum/)",
    })
    args = parser.parse_args(argv)
    p = load_stage_params("baselines", PARAMS, args.params)
    run_cfg, cfg = p["runtime"], p["evaluate"]

    device = rt.setup_runtime(run_cfg, p["seed"])
    data = load_prepared(args.data)
    splits = device_splits(data, device)
    labels = {s: d.labels for s, d in splits.items()}
    c, h, _ = data.image_shape
    encoder = ModelSpec.from_params(p["model"]).encoder(h, c).to(device)
    features = {
        # pixels have no norm to skip: their "before the final norm" feature is the pixels too
        "pixels": {s: {pool: d.batch(slice(None)).flatten(1) for pool in (*POOLS, PRENORM)}
                   for s, d in splits.items()},
        "random-init": {s: pooled_features(encoder, d, cfg["batch_size"], prenorm=True) for s, d in splits.items()},
    }
    details = {}
    for name, f in features.items():
        log.info("%s: the frozen protocols", name)  # names the edge-pick warnings that follow
        details[name] = frozen_protocols(f, labels, data.fewshot, data.num_classes, cfg, p["seed"])
    embeds = {"pixels": lambda x: x.flatten(1),
              "random-init": lambda x: encoder.feature(x, cfg["feature"])}
    geo = cfg["geometry"]
    for name, embed in embeds.items():
        details[name]["geometry"], spectrum = collapse_analysis(embed, splits["val"], geo["images"],
                                                                geo["crop_scale_min"], cfg["batch_size"], p["seed"])
        write_text(args.plots / "spectrum" / f"{name}.csv", records_csv(spectrum))
    bank, val = probe_splits(data, p["probe"]["bank_limit"], p["seed"], device)
    correct = probe_encoder(encoder, bank, val, knn_protocol(p["probe"]["knn"]), p["probe"]["batch_size"],
                            p["probe"]["chunk_size"])
    rows = block_rows(curves(correct), len(val))
    details["random-init"]["blocks"] = rows
    write_text(args.plots / "knn_blocks" / "random-init.csv", records_csv(rows))
    write_json(args.out / "details.json", details)
    write_json(args.out / "metrics.json", {name: flat_metrics(r) for name, r in details.items()})
    log.info("baselines: %s", {name: flat_metrics(r) for name, r in details.items()})


if __name__ == "__main__":
    sys.exit(run(main))
