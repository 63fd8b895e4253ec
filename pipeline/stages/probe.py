"""probe[variant]: k-NN accuracy of every encoder block (CLS and mean-patch) on the validation split.

Writes results/probe/<variant>/{blocks.json, metrics.json} and results/plots/knn_blocks/<variant>.csv; the
random-init floor is probed once, by the baselines stage. Selection reads the validation split only.
"""
from __future__ import annotations

import logging
import sys
import time

from pipeline.atomic import write_json, write_text
from pipeline.data.prepared import load_prepared
from pipeline.eval.probe import probe_encoder, probe_splits, select_depth
from pipeline.models.vit import POOLS
from pipeline.records import records_csv
from pipeline.stages.runner import load_stage_params, run, stage_parser
from pipeline.train import device as rt
from pipeline.train.checkpoint import load_encoder

log = logging.getLogger(__name__)

# the params keys this stage reads; pipeline/dag.py reads this tuple for Snakefile and dvc.yaml
PARAMS = ("seed", "runtime.device", "runtime.threads", "runtime.precision", "runtime.compile", "probe")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("probe", __doc__, True, {
        "data": "results/data/<dataset>",
        "model": "model.pt of a pretrained or refined encoder",
        "out": "results/probe/<model>",
        "plots": "results/plots (the curve goes to knn_blocks/)",
    })
    args = parser.parse_args(argv)
    p = load_stage_params("probe", PARAMS, args.params, args.variant)
    run_cfg, cfg = p["runtime"], p["probe"]

    device = rt.setup_runtime(run_cfg, p["seed"])
    encoder, ckpt = load_encoder(args.model)
    data = load_prepared(args.data)
    bank, val = probe_splits(data, cfg["bank_limit"], p["seed"], device)

    encoder.to(device)
    t0 = time.perf_counter()
    curves = probe_encoder(encoder, bank, val, cfg, lambda: rt.autocast(device, run_cfg["precision"]))
    log.info("k-NN per block: %s (%.1fs)", {k: [round(a, 4) for a in v] for k, v in curves.items()},
             time.perf_counter() - t0)
    depth = select_depth(curves[cfg["select_feature"]], cfg["select"])
    blocks = list(range(encoder.depth))
    rows = [{"block": b, **{pool: curves[pool][b] for pool in POOLS}} for b in blocks]
    write_text(args.plots / "knn_blocks" / f"{args.variant}.csv", records_csv(rows))
    write_json(args.out / "blocks.json", {
        "variant": args.variant, "rows": rows, "depth": depth, "select": cfg["select"],
        "select_feature": cfg["select_feature"], "bank_size": len(bank), "val_size": len(val)})
    metrics = {"depth": depth}  # no timings here: reruns must write identical bytes
    for pool in POOLS:
        best = max(blocks, key=lambda b: (curves[pool][b], -b))
        metrics.update({f"knn_{pool}_best": round(curves[pool][best], 6), f"knn_{pool}_best_block": best,
                        f"knn_{pool}_last": round(curves[pool][-1], 6)})
    write_json(args.out / "metrics.json", metrics)
    log.info("chosen refinement depth %d of %d blocks (%s on %s)", depth, encoder.depth, cfg["select"],
             cfg["select_feature"])


if __name__ == "__main__":
    sys.exit(run(main))
