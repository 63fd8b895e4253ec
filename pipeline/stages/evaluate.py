"""evaluate[variant]: k-NN, linear probe, few-shot, k-means and (if epochs > 0) fine-tuning of an encoder.

Writes results/evaluate/<variant>/{metrics.json (headline numbers), details.json (per-lr, per-split runs)} and
the covariance spectra of its features, raw, centred and standardized, to results/plots/spectrum/<variant>.csv (the
collapse analysis). A refined model also gets the analysis of its embedding, the last head's projector output:
metrics embedding_*, its spectra in details.json's embedding_spectrum.
The train split (k-NN bank, linear probe, few-shot pools, fine-tune) is prepare's arrays, or with
evaluate.train_split=full the whole root/train folder of an ImageFolder less the val hold-out (MAE's and
MIM-Refiner's protocols on ImageNet; data/folder_split.py); details.json's train_split says which, and its size.
Frozen features are the encoder's output tokens (after the final norm; a cut encoder has none, so its last kept
block's raw output), pooled as CLS and mean-patch; lr choices read val, test is read once.

A refined model is evaluated with two companions on the frozen protocols: its online encoder (model.pt holds the
EMA and the online weights; metrics online_*) and, when refinement cut the encoder, the cut-only control (the
pretrained encoder of --pretrained cut at the same depth and not trained; metrics control_*). A cc refinement's
cluster head (model.pt's "refiner") also scores its own argmax assignments on test next to k-means on the features:
metrics cluster_head_{acc,nmi,ari,used} (EMA encoder) and online_cluster_head_* (the encoder it trained with).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from pipeline import distributed
from pipeline.atomic import write_json, write_text
from pipeline.data.loader import device_splits
from pipeline.data.folder_split import full_train_split
from pipeline.data.prepared import SPLITS, load_prepared
from pipeline.eval.evaluation import Evaluation, companion_encoders, evaluate_metrics
from pipeline.eval.suite import flat_metrics
from pipeline.models.refined import saved_cluster_head
from pipeline.records import plot_csv, records_csv
from pipeline.stages.runner import fingerprint, load_stage_params, run, stage_parser
from pipeline.train import device as rt
from pipeline.train.checkpoint import Checkpointer, hash_state, load_encoder
from pipeline.train.finetune import FinetuneRecipe, finetune

log = logging.getLogger(__name__)

# the params keys this stage reads: its rule's params in rules/ (pipeline/deps.py), and so its dvc.yaml params
PARAMS = ("seed", "runtime.device", "runtime.threads", "runtime.precision", "runtime.compile", "runtime.nproc",
          "data.root", "data.resize", "data.workers", "evaluate")  # data.*: the full train split's folder and decoding


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("evaluate", __doc__, True, {
        "data": "results/data/<dataset>",
        "model": "model.pt of a pretrained or refined encoder",
        "out": "results/evaluate/<model>",
        "plots": "results/plots (the spectrum goes to spectrum/<variant>.csv)",
    })
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="a refined model's pretrained model.pt: evaluated cut at the refined depth when "
                             "refinement cut the encoder (the cut-only control)")
    args = parser.parse_args(argv)
    p = load_stage_params("evaluate", PARAMS, args.params, args.variant, seed=args.seed)
    run_cfg, cfg = p["runtime"], p["evaluate"]

    device = rt.setup_runtime(run_cfg, p["seed"])
    encoder, ckpt = load_encoder(args.model)
    full = cfg["train_split"] == "full"  # the whole root/train folder, decoded batch by batch (data/folder_split.py)
    data = load_prepared(args.data, splits=("val", "test") if full else SPLITS)
    splits, fewshot = device_splits(data, device), data.fewshot
    if full:
        splits["train"], fewshot = full_train_split(p["data"]["root"], data.card, p["data"]["resize"], data.fewshot,
                                                    device, p["data"]["workers"])
    # under torchrun every rank embeds a shard and fine-tunes; rank 0 runs the frozen protocols and writes
    ev = Evaluation(splits, fewshot, data.num_classes, cfg, p["seed"], device, run_cfg["precision"],
                    distributed.world().main)
    # a cc refinement's own clustering: its last cluster head on the CLS output of the encoders it was trained with
    cluster_head = saved_cluster_head(ckpt["refiner"], str(args.model)) if "refiner" in ckpt else None

    result = ev.protocols(encoder, cluster_head)
    companions = companion_encoders(ckpt, encoder, str(args.model), args.pretrained)
    for name, model in companions.items():
        result[name] = ev.protocols(model, cluster_head if name == "online" else None)
    if ev.main:
        collapse, spectrum = ev.collapse(encoder, ckpt, str(args.model))
        result.update(collapse)
        write_text(plot_csv(args.plots, "spectrum", args.variant, args.seed), records_csv(spectrum))
    if cfg["finetune"]["epochs"] > 0:
        resume = Checkpointer(args.out / "resume-finetune.pt",
                              fingerprint(p, data.card["sha256"], ckpt["arch"], hash_state(ckpt["encoder"])))
        result["finetune"] = finetune(ckpt["arch"], ckpt["encoder"], ev.splits, data.num_classes,
                                      FinetuneRecipe.from_params(cfg["finetune"]), p["seed"], device,
                                      run_cfg["precision"], resume)
    if not ev.main:
        return
    result["test_size"] = len(ev.splits["test"])  # the n of every test accuracy's binomial standard error
    result["train_split"] = {"name": cfg["train_split"], "size": len(ev.splits["train"])}
    write_json(args.out / "details.json", result)
    write_json(args.out / "metrics.json", evaluate_metrics(result, list(companions)))
    log.info("%s: %s", args.variant, flat_metrics(result))


if __name__ == "__main__":
    sys.exit(run(main, distributed=True))
