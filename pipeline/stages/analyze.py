"""analyze[variant]: per-block Fourier analysis of the encoder's token features on validation images.

Writes results/analyze/<variant>/frequency.csv (block, relative depth, frequency in units of π, Δ log amplitude)
and frequency.json (the amplitude at π per block: the "high-frequency" statistic of MFF's Figure 2 style).
"""
from __future__ import annotations

import logging
import sys

from pipeline.analysis.frequency import block_spectra
from pipeline.atomic import write_json, write_text
from pipeline.data.loader import DeviceImages
from pipeline.data.prepared import load_prepared
from pipeline.data.splits import stratified_subset
from pipeline.stages.runner import load_stage_params, run, stage_parser
from pipeline.train import device as rt
from pipeline.train.checkpoint import load_encoder

log = logging.getLogger(__name__)

# the params keys this stage reads; pipeline/dag.py reads this tuple for Snakefile and dvc.yaml
PARAMS = ("seed", "runtime.device", "runtime.threads", "runtime.precision", "runtime.compile", "analyze")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("analyze", __doc__, True, {
        "data": "results/data/<dataset>",
        "model": "results/pretrain/<variant>/model.pt",
        "out": "results/analyze/<variant>",
    })
    args = parser.parse_args(argv)
    p = load_stage_params("analyze", PARAMS, args.params, args.variant, ("pretrain",), args.seed)
    run_cfg, cfg = p["runtime"], p["analyze"]

    device = rt.setup_runtime(run_cfg, p["seed"])
    encoder, ckpt = load_encoder(args.model)
    data = load_prepared(args.data)
    idx = stratified_subset(data.y["val"], min(cfg["images"], data.y["val"].size), p["seed"])
    val = DeviceImages(data.x["val"][idx], data.y["val"][idx], data.card["mean"], data.card["std"], device)

    with rt.autocast(device, run_cfg["precision"]):
        spectra = block_spectra(encoder.to(device), val, cfg["batch_size"])
    depth = len(spectra)
    lines = ["block,relative_depth,frequency,dlog_amplitude"]
    for b, curve in enumerate(spectra):
        steps = len(curve) - 1
        lines += [f"{b},{(b + 1) / depth:.6g},{j / steps:.6g},{float(v):.6g}" for j, v in enumerate(curve)]
    write_text(args.out / "frequency.csv", "\n".join(lines) + "\n")
    high = [round(float(c[-1]), 6) for c in spectra]
    write_json(args.out / "frequency.json", {"variant": args.variant, "images": len(val), "high_frequency": high})
    log.info("Δ log amplitude at π per block: %s", high)


if __name__ == "__main__":
    sys.exit(run(main))
