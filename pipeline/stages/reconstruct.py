"""reconstruct[variant]: per-block reconstruction probe of a pretrained encoder (MIM-Refiner's decoder per block).

The encoder is frozen; for each block a fresh MAE decoder (params reconstruct) learns to reconstruct the masked
patches from that block's output of the visible tokens, for the same fixed budget on the train split, and is
scored on reconstruct.val_images val images with seeded masks (pipeline/eval/reconstruction.py). With the
probe's per-block k-NN it shows the three regimes of blocks (the report's recon_regimes figure).
Writes results/reconstruct/<variant>/{blocks.json, metrics.json} and results/plots/recon_blocks/<variant>.csv.
"""
from __future__ import annotations

import logging
import sys
import time

from pipeline.atomic import write_json, write_text
from pipeline.data.loader import DeviceImages
from pipeline.data.prepared import load_prepared
from pipeline.data.splits import stratified_subset
from pipeline.eval.reconstruction import DecoderRecipe, per_block_reconstruction
from pipeline.records import plot_csv, records_csv
from pipeline.stages.runner import load_stage_params, run, stage_parser
from pipeline.train import device as rt
from pipeline.train.checkpoint import load_encoder

log = logging.getLogger(__name__)

# the params keys this stage reads: its rule's params in rules/ (pipeline/deps.py), and so its dvc.yaml params
PARAMS = ("seed", "runtime.device", "runtime.threads", "runtime.precision", "runtime.compile", "reconstruct",
          "pretrain.mask_ratio", "pretrain.norm_pix_loss")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("reconstruct", __doc__, True, {
        "data": "results/data/<dataset>",
        "model": "results/pretrain/<variant>/model.pt",
        "out": "results/reconstruct/<variant>",
        "plots": "results/plots (the curve goes to recon_blocks/)",
    })
    args = parser.parse_args(argv)
    p = load_stage_params("reconstruct", PARAMS, args.params, args.variant, ("pretrain",), args.seed)
    run_cfg, pre = p["runtime"], p["pretrain"]
    recipe = DecoderRecipe.from_params(p["reconstruct"])

    device = rt.setup_runtime(run_cfg, p["seed"])
    encoder, _ = load_encoder(args.model)
    data = load_prepared(args.data)
    mean, std = data.card["mean"], data.card["std"]
    train = DeviceImages(data.x["train"], data.y["train"], mean, std, device)
    idx = stratified_subset(data.y["val"], min(recipe.val_images, data.y["val"].size), p["seed"])
    val = DeviceImages(data.x["val"][idx], data.y["val"][idx], mean, std, device)

    t0 = time.perf_counter()
    out = per_block_reconstruction(encoder.to(device), train, val, recipe, pre["mask_ratio"], pre["norm_pix_loss"],
                                   p["seed"], device, lambda: rt.autocast(device, run_cfg["precision"]))
    log.info("val reconstruction loss per block: %s (%.1fs)", out["loss"], time.perf_counter() - t0)
    rows = [{"block": b, "loss": loss, "se": se, "train_loss": tr}
            for b, (loss, se, tr) in enumerate(zip(out["loss"], out["se"], out["train_loss"]))]
    write_text(plot_csv(args.plots, "recon_blocks", args.variant, args.seed), records_csv(rows))
    write_json(args.out / "blocks.json", {"variant": args.variant, "rows": rows, "images": out["images"],
                                          "steps": out["steps"], "mask_ratio": pre["mask_ratio"],
                                          "norm_pix_loss": pre["norm_pix_loss"], **p["reconstruct"]})
    write_json(args.out / "metrics.json", {f"recon_loss_block{r['block']}": r["loss"] for r in rows})


if __name__ == "__main__":
    sys.exit(run(main))
