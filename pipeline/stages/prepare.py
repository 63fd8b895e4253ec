"""prepare: a dataset source -> results/data/<dataset>/ (uint8 arrays, val hold-out, few-shot splits, card)."""
from __future__ import annotations

import logging
import sys

from pipeline.data.prepared import make_card, save_prepared
from pipeline.data.sources import load_source
from pipeline.data.splits import fewshot_split, holdout_split, stratified_subset
from pipeline.stages.runner import load_stage_params, run, stage_parser

log = logging.getLogger(__name__)

# the params keys this stage reads: its rule's params in rules/ (pipeline/deps.py), and so its dvc.yaml params
PARAMS = ("seed", "data.dataset", "data.root", "data.image_size", "data.resize", "data.val_size", "data.train_limit",
          "data.test_limit", "data.fewshot_shots", "data.fewshot_seeds")  # not data.stream/workers: how pretrain reads


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("prepare", __doc__, False, {"out": "results/data/<dataset>"})
    args = parser.parse_args(argv)
    p = load_stage_params("prepare", PARAMS, args.params)
    seed, data = p["seed"], p["data"]

    src = load_source(data["dataset"], data["root"], data["image_size"], data["resize"])
    train_idx, val_idx = holdout_split(src.y_train, data["val_size"], seed)
    if data["train_limit"] and data["train_limit"] < train_idx.size:
        train_idx = train_idx[stratified_subset(src.y_train[train_idx], data["train_limit"], seed + 1)]
    test_idx = slice(None)
    if data["test_limit"] and data["test_limit"] < src.y_test.size:
        test_idx = stratified_subset(src.y_test, data["test_limit"], seed + 2)
    x = {"train": src.x_train[train_idx], "val": src.x_train[val_idx], "test": src.x_test[test_idx]}
    y = {"train": src.y_train[train_idx], "val": src.y_train[val_idx], "test": src.y_test[test_idx]}
    fewshot = {shots: {s: fewshot_split(y["train"], shots, s) for s in data["fewshot_seeds"]}
               for shots in data["fewshot_shots"]}
    card = make_card(x, y, src.classes, src.origin, seed)
    save_prepared(args.out, x, y, fewshot, card)
    log.info("wrote %s: train %d, val %d, test %d images of shape %s", args.out, *card["counts"].values(),
             card["shape"])


if __name__ == "__main__":
    sys.exit(run(main))
