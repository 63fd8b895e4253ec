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

from pipeline import params_rules
from pipeline.atomic import write_text
from pipeline.errors import ConfigError
# variant_model is re-exported: the stages import it from here
from pipeline.params_rules import batch_sizes, variant_model  # noqa: F401

SCHEMA_PATH = Path(__file__).with_name("params.schema.yaml")
_FLOAT_AS_STRING = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


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
    """Check `params` against the JSON schema, then the cross-key rules (pipeline/params_rules.py).

    Raises:
        ConfigError: naming the first offending key.
    """
    _check_finite(params)
    errors = sorted(_validator().iter_errors(params), key=lambda e: (len(e.absolute_path), list(e.absolute_path)))
    if errors:
        raise ConfigError(_schema_error_line(errors[0]))
    params_rules.check(params)


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


TIMM_INIT_PREFIX = "timm:"  # pretrain.variants.<v>.init: a timm model name; anything else is a file path


def init_file(variant: dict) -> str | None:
    """The checkpoint file a pretrain variant starts from: a dependency of its pretrain job in both tools. None for
    a variant trained from scratch or started from a timm name (then the name, a params value, is what both track)."""
    init = variant.get("init")  # optional key: absent = from scratch (params.schema.yaml)
    return init if init and not init.startswith(TIMM_INIT_PREFIX) else None


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
    for key, value in batch_sizes(params):
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
