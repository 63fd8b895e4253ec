"""probe[variant]: k-NN accuracy of every encoder block (CLS and mean-patch) on the validation split.

Writes results/probe/<variant>/{blocks.json, metrics.json} and results/plots/knn_blocks/<variant>.csv; the
random-init floor is probed once, by the baselines stage. Selection reads the validation split only.
The k-NN is the protocol named by probe.knn (pipeline/eval/knn.py); every accuracy comes with its binomial
standard error, and probe.select picks the block (pipeline/eval/probe.py::select_block; default one_se).
blocks.json: rows [{block, cls, mean_patch, cls_se, mean_patch_se}], the protocol (knn, k, temperature,
standardize), select, select_feature, block (the chosen 0-based block), depth (block + 1, read by refine),
best_block, se (the best accuracy's), tied_blocks (within one SE of the best), edge, bank_size, val_size, and
cls_correct (per block, the CLS k-NN's correctness of each val image as a string of 0 and 1).
"""
from __future__ import annotations

import logging
import sys
import time

from pipeline.atomic import write_json, write_text
from pipeline.data.prepared import load_prepared
from pipeline.eval.knn import knn_protocol
from pipeline.eval.probe import block_rows, curves, probe_encoder, probe_metrics, probe_splits, select_block
from pipeline.records import plot_csv, records_csv
from pipeline.stats import correctness_bits
from pipeline.stages.runner import load_stage_params, run, stage_parser
from pipeline.train import device as rt
from pipeline.train.checkpoint import load_encoder

log = logging.getLogger(__name__)

# the params keys this stage reads: its rule's params in rules/ (pipeline/deps.py), and so its dvc.yaml params
PARAMS = ("seed", "runtime.device", "runtime.threads", "runtime.precision", "runtime.compile", "probe")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("probe", __doc__, True, {
        "data": "results/data/<dataset>",
        "model": "model.pt of a pretrained or refined encoder",
        "out": "results/probe/<model>",
        "plots": "results/plots (the curve goes to knn_blocks/)",
    })
    args = parser.parse_args(argv)
    p = load_stage_params("probe", PARAMS, args.params, args.variant, seed=args.seed)
    run_cfg, cfg = p["runtime"], p["probe"]

    device = rt.setup_runtime(run_cfg, p["seed"])
    encoder, ckpt = load_encoder(args.model)
    data = load_prepared(args.data)
    bank, val = probe_splits(data, cfg["bank_limit"], p["seed"], device)

    encoder.to(device)
    protocol = knn_protocol(cfg["knn"])
    t0 = time.perf_counter()
    correct = probe_encoder(encoder, bank, val, protocol, cfg["batch_size"], cfg["chunk_size"],
                            lambda: rt.autocast(device, run_cfg["precision"]))
    accuracies = curves(correct)
    log.info("k-NN per block (%s): %s (%.1fs)", cfg["knn"], {k: [round(a, 4) for a in v] for k, v in accuracies.items()},
             time.perf_counter() - t0)
    choice = select_block(accuracies[cfg["select_feature"]], len(val), cfg["select"])
    rows = block_rows(accuracies, len(val))
    write_text(plot_csv(args.plots, "knn_blocks", args.variant, args.seed), records_csv(rows))
    write_json(args.out / "blocks.json", {
        "variant": args.variant, "rows": rows, "knn": cfg["knn"], **{f: getattr(protocol, f) for f in
                                                                      ("k", "temperature", "standardize")},
        "select": cfg["select"], "select_feature": cfg["select_feature"],
        **{k: choice[k] for k in ("block", "depth", "best_block", "se", "tied_blocks", "edge")},
        "bank_size": len(bank), "val_size": len(val),
        # per val image and block, CLS: refined and pretrained curves pair image by image (analysis/deltas.py)
        "cls_correct": [correctness_bits(c) for c in correct["cls"]]})
    write_json(args.out / "metrics.json", probe_metrics(accuracies, choice))
    log.info("chosen block %d of %d (%s on %s; tied within one SE %.4f of the best: %s)", choice["block"],
             encoder.depth, cfg["select"], cfg["select_feature"], choice["se"], choice["tied_blocks"])


if __name__ == "__main__":
    sys.exit(run(main))
