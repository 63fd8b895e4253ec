"""The prepared-dataset folder results/data/<dataset>/: arrays.npz, fewshot.json, card.json.

arrays.npz holds x_{train,val,test} uint8 [N, H, W, C] and y_{train,val,test} int64 [N];
fewshot.json holds {"<shots>": {"<seed>": [train indices]}}; card.json holds counts, hashes and the
per-channel mean/std of the train split that every model stage normalizes with.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_path, write_json
from pipeline.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Prepared:
    """A prepared dataset in memory."""

    x: dict[str, np.ndarray]          # split -> [N, H, W, C] uint8
    y: dict[str, np.ndarray]          # split -> [N] int64
    fewshot: dict[int, dict[int, np.ndarray]]  # shots -> seed -> train indices
    card: dict

    @property
    def num_classes(self) -> int:
        return len(self.card["classes"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images as the models see them."""
        h, w, c = self.card["shape"]
        return c, h, w


def array_hash(a: np.ndarray) -> str:
    """sha256 of an array's bytes, prefixed by its shape and dtype."""
    h = hashlib.sha256(f"{a.shape}{a.dtype}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def make_card(x: dict[str, np.ndarray], y: dict[str, np.ndarray], classes: tuple[str, ...], origin: str,
              split_seed: int) -> dict:
    """Counts per class and split, array hashes, the train split's per-channel mean/std (0..1 scale) and the seed
    the val hold-out was drawn with (what a stage streaming the folder draws it again with, whatever its own seed)."""
    train = x["train"].astype(np.float64) / 255.0
    return {
        "origin": origin,
        "split_seed": split_seed,
        "classes": list(classes),
        "shape": list(x["train"].shape[1:]),
        "counts": {s: int(y[s].shape[0]) for s in SPLITS},
        "counts_per_class": {s: np.bincount(y[s], minlength=len(classes)).tolist() for s in SPLITS},
        "sha256": {f"{k}_{s}": array_hash(a[s]) for k, a in (("x", x), ("y", y)) for s in SPLITS},
        "mean": train.mean(axis=(0, 1, 2)).round(6).tolist(),
        "std": train.std(axis=(0, 1, 2)).round(6).tolist(),
    }


def save_prepared(out_dir: Path, x: dict, y: dict, fewshot: dict, card: dict) -> None:
    """Write the three files of a prepared dataset, each atomically; the card goes last."""
    with atomic_path(out_dir / "arrays.npz") as tmp:
        with open(tmp, "wb") as f:  # a file object stops numpy from appending ".npz" to the temp name
            np.savez(f, **{f"x_{s}": x[s] for s in SPLITS}, **{f"y_{s}": y[s] for s in SPLITS})
    write_json(out_dir / "fewshot.json", {str(k): {str(s): v.tolist() for s, v in d.items()}
                                         for k, d in fewshot.items()})
    write_json(out_dir / "card.json", card)


def load_prepared(data_dir: str | Path, verify: bool = True, splits: tuple[str, ...] = SPLITS) -> Prepared:
    """Read a prepared dataset's `splits` (all three by default) and, if `verify`, check their arrays against the
    card's hashes.

    Raises:
        DataError: a file is missing or corrupt, or the arrays do not match the card.
    """
    data_dir = Path(data_dir)
    for name in ("arrays.npz", "fewshot.json", "card.json"):
        if not (data_dir / name).is_file():
            raise DataError(f"prepared dataset incomplete: {data_dir / name} is missing (run the prepare stage)")
    try:
        card = json.loads((data_dir / "card.json").read_text())
        shots = json.loads((data_dir / "fewshot.json").read_text())
        with np.load(data_dir / "arrays.npz") as z:
            x = {s: z[f"x_{s}"] for s in splits}  # an npz member is read only when asked for
            y = {s: z[f"y_{s}"] for s in splits}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # a truncated npz is a BadZipFile
        raise DataError(f"{data_dir}: cannot read prepared dataset ({type(err).__name__}: {err}); "
                        f"rerun the prepare stage") from None
    if verify:
        for key, arr in [*((f"x_{s}", x[s]) for s in splits), *((f"y_{s}", y[s]) for s in splits)]:
            if array_hash(arr) != card["sha256"].get(key):
                raise DataError(f"{data_dir}/arrays.npz: {key} does not match card.json (changed or corrupt)")
    fewshot = {int(k): {int(s): np.asarray(v, np.int64) for s, v in d.items()} for k, d in shots.items()}
    return Prepared(x, y, fewshot, card)
