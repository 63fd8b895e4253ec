"""Load params.yaml, validate it against params.schema.yaml, and hand each stage only its declared keys.

Run as a module to check a params file or to switch to a profile overlay:
    python -m pipeline.config check [params.yaml]
    python -m pipeline.config switch profiles/gpu/params.yaml   # rewrites params.yaml, comments kept
"""
from __future__ import annotations

import argparse
import copy
import functools
import io
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml
from ruamel.yaml import YAML  # ships with dvc; round-trips comments

from pipeline.atomic import write_text
from pipeline.errors import ConfigError

SCHEMA_PATH = Path(__file__).with_name("params.schema.yaml")
_FLOAT_AS_STRING = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


# what is known of the built-in datasets before prepare runs: (image side in pixels, channels, train images,
# classes); an imagefolder tree is RGB with data.image_size and unknown counts (config check reads the data card
# once prepare wrote it)
DATASET_FACTS = {"fashion_mnist": (28, 1, 60000, 10), "digits": (8, 1, 1437, 10), "cifar10": (32, 3, 50000, 10),
                 "cifar100": (32, 3, 50000, 100)}


def _key_path(parts: Iterable[Any]) -> str:
    return ".".join(str(p) for p in parts) or "<root>"


def _schema_error_line(err: jsonschema.ValidationError) -> str:
    """One line that names the key and the value, with a hint for the YAML 1.1 float trap."""
    key = _key_path(err.absolute_path)
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(sorted(err.schema.get("properties", {}))) or "any"
        return f"params: unknown key {_key_path([*err.absolute_path, extra[0]])!r} (allowed here: {allowed})"
    if isinstance(err.instance, str) and _FLOAT_AS_STRING.match(err.instance):
        return (f"params: {key} = {err.instance!r} is read as a string; write floats with a dot "
                f"and a signed exponent, e.g. 1.0e-3")
    return f"params: {key} = {err.instance!r}: {err.message}"


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    """The schema's validator, built once per process. An integer is an int: JSON Schema also counts 1.0, which
    reaches range() and tensor shapes as a float and fails there."""
    types = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))
    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=types)
    return cls(yaml.safe_load(SCHEMA_PATH.read_text()))


def validate(params: Any) -> None:
    """Check `params` against the JSON schema and the cross-key rules.

    Raises:
        ConfigError: naming the first offending key.
    """
    _check_finite(params)
    errors = sorted(_validator().iter_errors(params), key=lambda e: (len(e.absolute_path), list(e.absolute_path)))
    if errors:
        raise ConfigError(_schema_error_line(errors[0]))
    _check_cross_keys(params)
    _check_against_dataset(params)


def _check_finite(value: Any, path: tuple = ()) -> None:
    """YAML's .nan and .inf are floats that every numeric schema bound lets through (NaN compares false)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"params: {_key_path(path)} = {value}: not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, (*path, i))


def _batch_sizes(params: dict) -> list[tuple[str, int]]:
    """The global batch sizes of the training stages, by their params key."""
    return [("pretrain.batch_size", params["pretrain"]["batch_size"]),
            ("refine.batch_size", params["refine"]["batch_size"]),
            ("evaluate.finetune.batch_size", params["evaluate"]["finetune"]["batch_size"])]


def _check_against_dataset(params: dict) -> None:
    """Rules that need the image side, channels, classes and the train split's size: known for the built-in
    datasets."""
    data, patch = params["data"], params["model"]["patch_size"]
    side, channels, train, classes = DATASET_FACTS.get(data["dataset"], (data["image_size"], 3, None, None))
    if side % patch:
        raise ConfigError(f"params: model.patch_size={patch} does not divide the {side}-pixel images of "
                          f"{data['dataset']!r}" + (" (data.image_size)" if data["dataset"] == "imagefolder" else ""))
    if params["pretrain"]["norm_pix_loss"] and patch * patch * channels < 2:
        raise ConfigError(f"params: pretrain.norm_pix_loss=true with model.patch_size={patch}: a patch of "
                          f"{data['dataset']!r} holds one value, whose unbiased variance is undefined (a NaN loss)")
    if params["refine"]["local_size"] > side:
        raise ConfigError(f"params: refine.local_size={params['refine']['local_size']} exceeds the {side}-pixel images "
                          f"of {data['dataset']!r} (a local crop is a part of the image; 0 = the image size)")
    if params["evaluate"]["kmeans"] and classes and 0 < data["test_limit"] < classes:
        raise ConfigError(f"params: data.test_limit={data['test_limit']} keeps fewer test images than the {classes} "
                          f"clusters (the classes of {data['dataset']!r}) that evaluate.kmeans=true fits")
    if train is None:
        return
    if data["val_size"] >= train:
        raise ConfigError(f"params: data.val_size={data['val_size']} leaves no training images ({data['dataset']} "
                          f"has {train})")
    left = train - data["val_size"]
    kept = min(left, data["train_limit"]) if data["train_limit"] else left
    for key, value in _batch_sizes(params):
        if value > kept:
            raise ConfigError(f"params: {key}={value} exceeds the {kept} training images ({data['dataset']} after "
                              f"data.val_size and data.train_limit)")


def _check_cross_keys(params: dict) -> None:
    model, pretrain = params["model"], params["pretrain"]
    data = params["data"]
    if data["stream"] and data["dataset"] != "imagefolder":
        raise ConfigError(f"params: data.stream=true streams an ImageFolder tree; it needs data.dataset=imagefolder "
                          f"(got {data['dataset']!r})")
    if data["stream"] and not data["root"]:
        raise ConfigError("params: data.stream=true needs data.root (a folder with train/ and val/ class subfolders)")
    for name, variant in pretrain["variants"].items():
        _check_model(variant_model(model, variant), _model_key(name, variant))
    if pretrain["warmup_epochs"] >= pretrain["epochs"]:
        raise ConfigError(f"params: pretrain.warmup_epochs={pretrain['warmup_epochs']} must be below "
                          f"pretrain.epochs={pretrain['epochs']}")
    local_size = params["refine"]["local_size"]
    if local_size % model["patch_size"]:
        raise ConfigError(f"params: refine.local_size={local_size} is not a multiple of model.patch_size="
                          f"{model['patch_size']}")
    nproc = params["runtime"]["nproc"]
    for key, value in _batch_sizes(params):
        if value % nproc:
            raise ConfigError(f"params: {key}={value} is not divisible by "
                              f"runtime.nproc={nproc} (each process takes an equal slice of the global batch)")
    reserved = set(pretrain["variants"]) | {"baselines", "random-init", "pixels"}
    for name, refined in params["refine"]["variants"].items():
        if name in reserved:
            raise ConfigError(f"params: refine.variants.{name} reuses a name of pretrain.variants or of a baseline "
                              f"(results/<stage>/{name} would hold two models)")
        if refined["pretrained"] not in pretrain["variants"]:
            raise ConfigError(f"params: refine.variants.{name}.pretrained={refined['pretrained']!r} is not a key of "
                              f"pretrain.variants ({', '.join(sorted(pretrain['variants']))})")
        source = pretrain["variants"][refined["pretrained"]]
        _check_refined_blocks(params["refine"], variant_model(model, source)["depth"],
                              _model_key(refined["pretrained"], source)("depth"))
        for key in ("moco_momentum", "moco_momentum_schedule"):
            if key in refined and refined["objective"] not in ("moco", "mochi"):
                raise ConfigError(f"params: refine.variants.{name}.{key} is for objectives moco and mochi "
                                  f"(its objective is {refined['objective']!r})")
    for name, variant in pretrain["variants"].items():
        blocks, depth = variant["fuse_blocks"], variant_model(model, variant)["depth"]
        for key in ("fusion_lr_scale", "fusion_weight_decay"):
            if key in variant and not (blocks and variant["fusion"] == "softmax"):
                raise ConfigError(f"params: pretrain.variants.{name}.{key} is for a variant with learned fusion "
                                  f"(fuse_blocks and fusion: softmax)")
        if blocks and (sorted(blocks) != blocks or blocks[-1] != depth - 1 or len(blocks) < 2):
            raise ConfigError(f"params: pretrain.variants.{name}.fuse_blocks={blocks} must be increasing, hold "
                              f"at least two blocks and end with the last block {depth - 1} "
                              f"({_model_key(name, variant)('depth')}={depth})")
        _check_variant_start(name, variant, pretrain)


def variant_model(model: dict, variant: dict) -> dict:
    """The model keys of a pretrain variant: the global `model`, with the variant's own `model` entries in place."""
    return {**model, **variant.get("model", {})}  # optional key: absent = the global sizes (params.schema.yaml)


def _model_key(name: str, variant: dict):
    """key -> where a variant's model key is set: its own entry, or the global `model` it inherits."""
    own = variant.get("model", {})
    return lambda key: f"pretrain.variants.{name}.model.{key}" if key in own else f"model.{key}"


def _check_model(model: dict, where) -> None:
    """A model's sizes that the schema cannot relate: widths against heads, the 2-D sin-cos width."""
    for width, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
        if model[width] % model[heads]:
            raise ConfigError(f"params: {where(width)}={model[width]} is not divisible by "
                              f"{where(heads)}={model[heads]}")
    if model["embed_dim"] % 4:
        raise ConfigError(f"params: {where('embed_dim')}={model['embed_dim']} must be a multiple of 4 (2-D sin-cos)")


def _check_refined_blocks(refine: dict, blocks: int, depth_key: str) -> None:
    """refine.depth and refine.heads against the blocks of the encoder a refinement starts from."""
    depth = refine["depth"]
    if isinstance(depth, int) and depth > blocks:
        raise ConfigError(f"params: refine.depth={depth} is beyond the model's {blocks} blocks ({depth_key})")
    heads, kept = refine["heads"], depth if isinstance(depth, int) else blocks
    if isinstance(heads, int) and heads > kept:  # depth: probe is only known after the probe; refine checks it then
        raise ConfigError(f"params: refine.heads={heads} exceeds the {kept} blocks that refine.depth={depth!r} keeps "
                          f"({depth_key}={blocks})")


TIMM_INIT_PREFIX = "timm:"  # pretrain.variants.<v>.init: a timm model name; anything else is a file path


def init_file(variant: dict) -> str | None:
    """The checkpoint file a pretrain variant starts from: a dependency of its pretrain job in both tools. None for
    a variant trained from scratch or started from a timm name (then the name, a params value, is what both track)."""
    init = variant.get("init")  # optional key: absent = from scratch (params.schema.yaml)
    return init if init and not init.startswith(TIMM_INIT_PREFIX) else None


def _check_variant_start(name: str, variant: dict, pretrain: dict) -> None:
    """A variant's own `epochs` (else pretrain.epochs) against `init` and pretrain.warmup_epochs."""
    epochs = variant.get("epochs")
    if epochs == 0 and not variant.get("init"):
        raise ConfigError(f"params: pretrain.variants.{name}.epochs=0 without init would keep a random encoder "
                          f"(the baselines stage reports that one); set init to a checkpoint")
    if epochs and epochs <= pretrain["warmup_epochs"]:
        raise ConfigError(f"params: pretrain.variants.{name}.epochs={epochs} must exceed pretrain.warmup_epochs="
                          f"{pretrain['warmup_epochs']} (or be 0 with init: the imported model, untrained)")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key written twice in one mapping is an error: PyYAML keeps the last
    value silently, so `seed: 0` then `seed: 1` would run with seed 1 while the file reads as seed 0."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} written twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read and validate a params file.

    Raises:
        ConfigError: the file is missing, is not YAML, or fails validation.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params: file not found: {path}")
    try:
        params = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"params: {where}: not valid YAML: {problem}") from None
    validate(params)
    return params


def check_environment(params: dict, results: str | Path = "results") -> None:
    """Rules that need more than the params file, for `config check`: batch sizes against the training images
    (the prepared data card when there is one, else data.train_limit) and runtime.device=cuda against the machine.

    Raises:
        ConfigError: naming the key.
    """
    card = Path(results) / "data" / params["data"]["dataset"] / "card.json"
    if card.is_file():
        train, source = json.loads(card.read_text())["counts"]["train"], str(card)
    else:
        train, source = params["data"]["train_limit"], "data.train_limit"
    for key, value in _batch_sizes(params):
        if train and value > train:
            raise ConfigError(f"params: {key}={value} exceeds the {train} training images ({source})")
    if params["runtime"]["device"] == "cuda":
        import torch  # only here: `config check` stays quick on CPU machines

        if not torch.cuda.is_available():
            raise ConfigError("params: runtime.device = 'cuda' but no CUDA device is visible (use auto or cpu)")


def select(params: dict, keys: Iterable[str]) -> dict:
    """Return a nested copy of `params` holding only the dotted `keys` (e.g. "pretrain.variants.mae")."""
    out: dict = {}
    for key in keys:
        src, dst = params, out
        parts = key.split(".")
        for part in parts[:-1]:
            src = src[part]
            dst = dst.setdefault(part, {})
        if parts[-1] not in src:
            raise ConfigError(f"params: missing key {key!r}")
        dst[parts[-1]] = copy.deepcopy(src[parts[-1]])
    return out


def check_variant(params: dict, variant: str, kinds: tuple[str, ...] = ("pretrain", "refine")) -> None:
    """Raise ConfigError if `variant` is not a key of `<kind>.variants` for any of `kinds`."""
    known = {kind: sorted(params[kind]["variants"]) for kind in kinds}
    if not any(variant in names for names in known.values()):
        listing = "; ".join(f"{kind}.variants has: {', '.join(names) or 'none'}" for kind, names in known.items())
        raise ConfigError(f"params: unknown variant {variant!r} ({listing})")


def stage_params(keys: Iterable[str], path: str | Path = "params.yaml") -> dict:
    """Validate the whole params file, then return only the keys a stage declared."""
    return select(load_params(path), keys)


def switch(overlay: str | Path, path: str | Path = "params.yaml") -> list[str]:
    """Merge the keys of `overlay` into the params file in place, keeping its comments and layout.

    Returns:
        The dotted keys whose values changed.
    """
    rt = YAML()
    rt.preserve_quotes = True
    target = rt.load(Path(path).read_text())
    changes = yaml.safe_load(Path(overlay).read_text()) or {}
    changed: list[str] = []

    def merge(dst: Any, src: dict, prefix: str) -> None:
        for key, value in src.items():
            if isinstance(value, dict) and isinstance(dst.get(key), dict) and not key == "variants":
                merge(dst[key], value, f"{prefix}{key}.")
            elif dst.get(key) != value:
                dst[key] = value
                changed.append(prefix + key)

    merge(target, changes, "")
    buf = io.StringIO()
    rt.dump(target, buf)
    validate(yaml.safe_load(buf.getvalue()))
    write_text(path, buf.getvalue())
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.config", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    check = sub.add_parser("check", help="validate a params file")
    check.add_argument("params", nargs="?", default="params.yaml")
    sw = sub.add_parser("switch", help="merge a profile overlay into params.yaml")
    sw.add_argument("overlay")
    sw.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "check":
            check_environment(load_params(args.params))
            print(f"{args.params}: valid")
        else:
            changed = switch(args.overlay, args.params)
            print(f"{args.params}: {len(changed)} keys changed: {', '.join(changed) or 'none'}")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
