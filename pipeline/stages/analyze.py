"""analyze[variant]: per-block Fourier analysis of the encoder's token features on validation images, and the
sharpness of the pretraining loss at the final weights.

Writes results/analyze/<variant>/frequency.csv (block, relative depth, frequency 2πk/n of the n x n token grid in
units of π and as an exact label, Δ log amplitude, linear amplitude) and frequency.json: high_frequency (the Δ log
amplitude at the highest frequency per block, MFF's Figure 2 statistic; that frequency is 2π·floor(n/2)/n, π only
for even n) and the last block's linear amplitude spectrum, absolute (MFF's claim: higher at low, lower at high
frequencies), and hessian.json: the largest eigenvalue of the Hessian of the pretraining loss (MAE's masked
reconstruction, of MFF-MAE for a fused variant) on analyze.hessian_images validation images with fixed masks, by
power iteration with Hessian-vector products, its convergence and every estimate (MFF's flatter-loss claim).
"""
from __future__ import annotations

import logging
import sys

from torch.nn.attention import SDPBackend, sdpa_kernel

from pipeline.analysis.frequency import block_spectra, diagonal_frequencies, frequency_table
from pipeline.atomic import write_json, write_text
from pipeline.config import variant_model
from pipeline.data.loader import DeviceImages
from pipeline.data.prepared import load_prepared
from pipeline.data.splits import stratified_subset
from pipeline.eval.hessian import top_hessian_eigenvalue
from pipeline.models.mae import ModelSpec
from pipeline.models.vit import ViTEncoder
from pipeline.models.weights import load_module_state
from pipeline.stages.runner import load_stage_params, run, stage_parser
from pipeline.train import device as rt
from pipeline.train.checkpoint import load_encoder
from pipeline.train.mae_step import fixed_batch_loss

log = logging.getLogger(__name__)

# the params keys this stage reads: its rule's params in rules/ (pipeline/deps.py), and so its dvc.yaml params
PARAMS = ("seed", "runtime.device", "runtime.threads", "runtime.precision", "runtime.compile", "analyze", "model",
          "pretrain.variants.{variant}", "pretrain.mask_ratio", "pretrain.norm_pix_loss")


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
        spectra, amplitudes = block_spectra(encoder.to(device), val, cfg["batch_size"])
    grid = int(encoder.num_patches ** 0.5)
    freqs = diagonal_frequencies(grid)
    csv, record = frequency_table(spectra, amplitudes, freqs)
    write_text(args.out / "frequency.csv", csv)
    write_json(args.out / "frequency.json", {"variant": args.variant, "images": len(val), "grid": grid, **record})
    log.info("Δ log amplitude at %s per block: %s; last block's linear amplitude at %s: %s", freqs[-1][1],
             record["high_frequency"], record["frequency_labels"], record["last_block_amplitude"])
    write_json(args.out / "hessian.json",
               {"variant": args.variant, **sharpness(p, args.variant, encoder, ckpt, val, device)})


def sharpness(p: dict, variant: str, encoder: ViTEncoder, ckpt: dict, val: DeviceImages, device) -> dict:
    """The top Hessian eigenvalue of the pretraining loss at model.pt's weights (fp32, eval mode: no randomness
    but the seeded masks), on the first analyze.hessian_images of the analysis images."""
    cfg, spec = p["analyze"], p["pretrain"]["variants"][variant]
    mae = ModelSpec.from_params(variant_model(p["model"], spec)).autoencoder(encoder, ckpt.get("fuse_blocks", []),
                                                        spec.get("fusion", "softmax"))
    load_module_state(mae, ckpt["model"], f"{variant} model.pt:model")
    mae.to(device).eval()
    images = val.batch(slice(0, cfg["hessian_images"]))
    loss = fixed_batch_loss(mae, images, p["pretrain"]["mask_ratio"], p["pretrain"]["norm_pix_loss"], p["seed"],
                            cfg["batch_size"])
    params = [q for q in mae.parameters() if q.requires_grad]
    with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no second derivative
        out = top_hessian_eigenvalue(loss, params, cfg["hessian_iterations"], p["seed"])
    log.info("top Hessian eigenvalue of the pretraining loss: %.6g after %d iterations (converged: %s)",
             out["eigenvalue"], out["iterations"], out["converged"])
    return {"images": len(images), "mask_ratio": p["pretrain"]["mask_ratio"],
            "top_eigenvalue": round(out["eigenvalue"], 6), "iterations": out["iterations"],
            "converged": out["converged"], "relative_change": round(out["relative_change"], 8),
            "history": [round(h, 6) for h in out["history"]]}


if __name__ == "__main__":
    sys.exit(run(main))
