"""Fuzzed params files: each is accepted, or refused with one `params:` line naming a key; never a traceback.

A seeded generator (SEED, or $PARAMS_FUZZ_SEED) mutates one or two keys of the tiny params at a time: wrong types,
boundary values, NaN and infinities, empty lists, huge values, unknown keys and variant names that point nowhere,
at any leaf. The config level validates many cases in process; the stage level runs a one-step prepare -> pretrain
-> probe -> refine -> evaluate chain on digits for a few of them, in one subprocess per case. Every case prints as
`seed <SEED> case <i>: path=value; ...`, so a failure names what to replay. Cases the fuzzer found, each fixed
where the value is validated, stay in FOUND.
"""
from __future__ import annotations

import copy
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

import pytest

from pipeline import config
from pipeline.errors import ConfigError
from tests.conftest import REPO, tiny_params, write_params

SEED = int(os.environ.get("PARAMS_FUZZ_SEED", "20240611"))
CONFIG_CASES = 1000  # about 1 ms each
STAGE_VALID, STAGE_INVALID = 5, 5  # a valid case runs the whole chain (about 15 s), an invalid one stops in a stage
CHAIN_TIMEOUT_S = 90
CHAIN_MEMORY_BYTES = 8 << 30  # the chain's address space: a huge width fails to allocate instead of swapping

KeyPath = tuple[Any, ...]  # a key path into params: str keys, int list indices
Case = tuple[tuple[KeyPath, Any], ...]  # ((path, value), ...) set in order

# the values a leaf of each kind is swapped for (bool is not a number to the schema, nor a number a bool)
NOT_A_NUMBER = ["8", [1], {"a": 1}, None, True, False]
NOT_A_STRING = [1, 0.5, [], {"a": 1}, None, True]
NOT_A_BOOL = [1, 0, "true", None, [True]]
NOT_A_LIST = ["x", 1, {"a": 1}, None]
BOUNDARY = [0, -1, 1, 0.0, 1.0]
NON_FINITE = [float("nan"), float("inf"), float("-inf")]
HUGE = [1e9, 10**9]
KINDS = ("type", "boundary", "non_finite", "empty", "huge", "unknown", "dangling")


def dotted(path: KeyPath) -> str:
    return ".".join(str(p) for p in path) or "<root>"


def describe(case: Case) -> str:
    return "; ".join(f"{dotted(path)}={value!r}" for path, value in case)


def leaf_paths(tree: Any, prefix: KeyPath = ()) -> list[KeyPath]:
    """Every leaf of a params tree: values under dicts, a list and each of its items."""
    if isinstance(tree, dict) and tree:
        return [p for k, v in tree.items() for p in leaf_paths(v, (*prefix, k))]
    if isinstance(tree, list):
        return [prefix, *(p for i, v in enumerate(tree) for p in leaf_paths(v, (*prefix, i)))]
    return [prefix]


def section_paths(tree: Any, prefix: KeyPath = ()) -> list[KeyPath]:
    """Every dict of a params tree, the root included: where an unknown key can go."""
    if not isinstance(tree, dict):
        return []
    return [prefix, *(p for k, v in tree.items() for p in section_paths(v, (*prefix, k)))]


def lookup(tree: Any, path: KeyPath) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def apply(params: dict, case: Case) -> dict:
    """A copy of `params` with each (path, value) of `case` set, in order."""
    out = copy.deepcopy(params)
    for path, value in case:
        lookup(out, path[:-1])[path[-1]] = copy.deepcopy(value)
    return out


def _wrong_type(rng: random.Random, current: Any) -> Any:
    if isinstance(current, bool):
        return rng.choice(NOT_A_BOOL)
    if isinstance(current, (int, float)):
        return rng.choice(NOT_A_NUMBER)
    if isinstance(current, str):
        return rng.choice(NOT_A_STRING)
    if isinstance(current, list):
        return rng.choice(NOT_A_LIST)
    return rng.choice(NOT_A_NUMBER + NOT_A_STRING)


def mutation(rng: random.Random, params: dict) -> tuple[KeyPath, Any]:
    """One (path, value) drawn for `params`: a kind of fault, then a leaf (or a section) to put it in."""
    kind = rng.choice(KINDS)
    if kind == "unknown":
        return (*rng.choice(section_paths(params)), "fuzz_extra"), rng.choice([1, "x", None, {}])
    if kind == "dangling":
        variants = params["refine"]["variants"]
        refined = sorted(k for k, v in variants.items() if isinstance(v, dict)) if isinstance(variants, dict) else []
        choices = [(("pretrain", "variants"), {}), (("refine", "variants"), {})]
        choices += [(("refine", "variants", r, "pretrained"), "nowhere") for r in refined]
        return rng.choice(choices)
    path = rng.choice(leaf_paths(params))
    current = lookup(params, path)
    value = {"type": lambda: _wrong_type(rng, current),
             "boundary": lambda: (not current) if isinstance(current, bool) else rng.choice(BOUNDARY),
             "non_finite": lambda: rng.choice(NON_FINITE), "empty": lambda: [],
             "huge": lambda: rng.choice(HUGE)}[kind]()
    return path, value


def fuzz_cases(seed: int, base: dict) -> Iterator[Case]:
    """Endless cases of one or two mutations of `base`, the same sequence for the same `seed`."""
    rng = random.Random(seed)
    while True:
        case: Case = ()
        for _ in range(rng.choice((1, 2))):
            case += (mutation(rng, apply(base, case)),)
        yield case


# a ConfigError line: `params: ` then a dotted key (followed by `=`, ` =`, ` ` or `:`) or `unknown key '<key>'`
_NAMED_KEY = re.compile(r"^params: (?:unknown key '(?P<unknown>[^']+)'|(?P<key><root>|[a-z_]\w*(?:\.\w+)*)[ =:])")


def check_config_error(message: str, params: dict) -> None:
    """Assert `message` is one `params:` line that names a key of `params`."""
    assert "\n" not in message, f"more than one line: {message!r}"
    match = _NAMED_KEY.match(message)
    assert match, f"does not start with `params: <key>`: {message!r}"
    key = match["unknown"] or match["key"]
    if key != "<root>":
        parts = [int(p) if p.isdigit() else p for p in key.split(".")]
        try:
            lookup(params, parts)
        except (KeyError, IndexError, TypeError):
            raise AssertionError(f"names {key!r}, which is not a key of the params: {message!r}") from None


def validation_error(params: dict) -> str | None:
    """None if `params` is valid, else the ConfigError line; any other exception propagates (a bug)."""
    try:
        config.validate(params)
    except ConfigError as err:
        return str(err)
    return None


def test_validate__fuzzed_params_pass_or_name_a_key():
    base = tiny_params()
    refused = 0
    for i, case in enumerate(islice(fuzz_cases(SEED, base), CONFIG_CASES)):
        params = apply(base, case)
        try:
            message = validation_error(params)
            if message is not None:
                refused += 1
                check_config_error(message, params)
        except Exception as err:  # anything but a ConfigError, or a line that names no key, is a bug
            raise AssertionError(f"seed {SEED} case {i}: {describe(case)}: {type(err).__name__}: {err}") from err
        print(f"seed {SEED} case {i}: {describe(case)} -> {message or 'valid'}")
    print(f"config level: {CONFIG_CASES} cases, {refused} refused, {CONFIG_CASES - refused} valid")
    assert 0 < refused < CONFIG_CASES  # the generator reaches both sides


# ---- stage level: one subprocess per case runs the chain in process, stage after stage --------------------------

CHAIN = ("prepare", "pretrain", "probe", "refine", "evaluate_refined")  # the DAG's rule names, in DAG order
CHAIN_NAMES = {"dataset": "digits", "variant": "mae", "refined": "mae_nna", "pretrained": "mae", "seed": 0}


def chain_base() -> dict:
    """The tiny params cut to one step of each stage: one variant, one refinement, no fine-tuning."""
    p = tiny_params()
    p["pretrain"].update(epochs=1, warmup_epochs=0, variants={"mae": {"fuse_blocks": [], "fusion": "softmax"}})
    p["refine"].update(head_epochs=1, epochs=1, warmup_epochs=0,
                       variants={"mae_nna": {"pretrained": "mae", "objective": "nna"}})
    p["evaluate"]["finetune"].update(epochs=0)
    p["evaluate"]["linear"].update(epochs=1)
    p["data"].update(fewshot_shots=[1], fewshot_seeds=[0])  # the few-shot fits are most of evaluate's time
    return p


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root.parent)) for p in root.rglob("*")} if root.is_dir() else set()


def drive_chain() -> int:
    """Run CHAIN in this process as the DAG's commands do, stopping at the first non-zero exit code.

    Prints one JSON line per stage to stdout: its name, exit code and the paths it added under results/. The
    stages run through `runner.run` without its torchrun relaunch, so runtime.nproc > 1 runs as one process here.
    """
    import importlib

    from pipeline.dvc_yaml import stage_argv
    from pipeline.stages.runner import run

    for name in CHAIN:
        module, argv = stage_argv(name, CHAIN_NAMES)
        before = _tree(Path("results"))
        code = run(importlib.import_module(module).main, argv)
        print(json.dumps({"stage": name, "code": code, "new": sorted(_tree(Path("results")) - before)}), flush=True)
        if code:
            return code
    return 0


def run_chain(work: Path, params: dict) -> dict:
    """Run the chain on `params` in `work` in one subprocess: its exit code (None at the timeout), stderr and the
    records drive_chain printed."""
    write_params(work / "params.yaml", params)
    driver = "import sys; from tests.config.test_params_fuzz import drive_chain; sys.exit(drive_chain())"
    proc = subprocess.Popen([sys.executable, "-c", driver], cwd=work, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_limit_memory)
    try:
        out, err = proc.communicate(timeout=CHAIN_TIMEOUT_S)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its whole session, DataLoader workers included
        out, err = proc.communicate()
        code = None
    records = [json.loads(line) for line in out.splitlines() if line.startswith('{"stage": ')]
    return {"code": code, "stderr": err, "stages": records}


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHAIN_MEMORY_BYTES, CHAIN_MEMORY_BYTES))


def _slow_by_design(case: Case) -> bool:
    """A huge epoch count is valid and only runs long; the config level covers it, the chain would time out."""
    return any(str(path[-1]).endswith("epochs") and type(value) in (int, float) and value > 10 for path, value in case)


def stage_cases(seed: int) -> list[Case]:
    """The first STAGE_VALID distinct cases of the chain base that pass validation, then the first STAGE_INVALID
    that fail."""
    base, picked = chain_base(), {True: [], False: []}
    quota = {True: STAGE_VALID, False: STAGE_INVALID}
    for case in fuzz_cases(seed, base):
        valid = validation_error(apply(base, case)) is None
        seen = any(describe(case) == describe(other) for other in picked[valid])
        if len(picked[valid]) < quota[valid] and not seen and not (valid and _slow_by_design(case)):
            picked[valid].append(case)
        if all(len(picked[k]) == quota[k] for k in quota):
            return picked[True] + picked[False]
    raise AssertionError("unreachable: fuzz_cases is endless")


# a stage's error line names a params key (a dotted path under a section, or seed/seeds) ...
_STAGE_KEY = re.compile(r"\b(?:(?:runtime|data|model|pretrain|probe|reconstruct|refine|evaluate|analyze)\.\w+|seeds?\b)")
# ... or says training diverged after an update: a loss that is not finite before any update (step 0) comes from
# the params themselves, and validation must catch them
_DIVERGED = re.compile(r"^error: non-finite loss at step [1-9]\d*;")


def check_chain(result: dict) -> str:
    """Assert the chain ran, or stopped in one stage with exit 2, one `error:` line naming a key and nothing left
    behind by that stage (resume checkpoints aside); return the outcome in a few words."""
    stderr, stages = result["stderr"], result["stages"]
    assert "Traceback" not in stderr, stderr[-3000:]
    if result["code"] is None:  # a valid case still running at the timeout: slow is not wrong
        return f"running after {CHAIN_TIMEOUT_S} s"
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    if result["code"] == 0:
        assert [s["stage"] for s in stages] == list(CHAIN) and not errors, stderr[-3000:]
        return "ran"
    assert result["code"] == 2, f"exit {result['code']}: {stderr[-3000:]}"
    failed = stages[-1] if stages else {"stage": "?", "code": None}
    assert failed["code"] == 2 and len(errors) == 1, (failed, errors)
    assert _STAGE_KEY.search(errors[0]) or _DIVERGED.match(errors[0]), f"names no key: {errors[0]}"
    kept = [Path(p) for p in failed["new"] if Path(p).name.startswith("resume")]  # resumable, kept on purpose
    allowed = {str(p) for k in kept for p in (k, k.parent / ".lock", *k.parents)}
    stray = [p for p in failed["new"] if p not in allowed]
    assert not stray, f"{failed['stage']} failed and left {stray}"
    return f"{failed['stage']}: {errors[0]}"


@pytest.mark.parametrize("result", [
    {"code": 1, "stderr": "Traceback (most recent call last):\nRuntimeError: x", "stages": []},
    {"code": 1, "stderr": "libgomp: Out of memory", "stages": [{"stage": "prepare", "code": 0, "new": []}]},
    {"code": 2, "stderr": "error: params: refine.ema = 1", "stages": [
        {"stage": "refine", "code": 2, "new": ["results/refine/mae_nna/seed0/live"]}]},
    {"code": 2, "stderr": "error: non-finite loss at step 0; last good checkpoint: none", "stages": [
        {"stage": "pretrain", "code": 2, "new": []}]},
    {"code": 2, "stderr": "error: params: data.val_size = 1\nerror: params: data.val_size = 1", "stages": [
        {"stage": "prepare", "code": 2, "new": []}]},
], ids=["traceback", "exit-1", "stray-live-folder", "nan-before-any-update", "two-error-lines"])
def test_check_chain__rejects_what_the_fuzzer_must_catch(result):
    with pytest.raises(AssertionError):
        check_chain(result)


def test_check_chain__accepts_one_named_line_and_kept_resume_checkpoints():
    out = "results/refine/mae_nna/seed0"
    new = ["results/refine", "results/refine/mae_nna", out, f"{out}/.lock", f"{out}/resume-heads.pt"]
    result = {"code": 2, "stderr": "error: params: refine.ema = 1",
              "stages": [{"stage": "refine", "code": 2, "new": new}]}
    assert check_chain(result).startswith("refine")


STAGE_CASES = stage_cases(SEED)


@pytest.mark.parametrize("i", range(len(STAGE_CASES)), ids=[describe(c) for c in STAGE_CASES])
def test_chain__fuzzed_params_run_or_stop_with_one_line(tmp_path, i):
    case = STAGE_CASES[i]
    outcome = check_chain(run_chain(tmp_path, apply(chain_base(), case)))
    print(f"seed {SEED} stage case {i}: {describe(case)} -> {outcome}")


# Cases the fuzz values found (in chain runs of random cases, of every valid single mutation of chain_base and of
# a few pairs), each a crash or a wrong error line before its fix: where it failed, then what now refuses it. Sizes
# got a schema maximum (a typo guard); the memory errors were MemoryError or torch's "DefaultCPUAllocator: can't
# allocate memory" in the chain's 8 GiB address space (on a machine without that limit, swap or the OOM killer).
FOUND = [
    # TypeError in train/loop.py's range(): JSON Schema counts 1.0 as an integer; config's validator takes ints only
    (((("pretrain", "epochs"), 1.0),), "pretrain.epochs = 1.0: 1.0 is not of type 'integer'"),
    # pretrain: "libgomp: Out of memory allocating 216000001344 bytes", exit 1 (torch.set_num_threads)
    (((("runtime", "threads"), 10**9),), "runtime.threads = 1000000000"),
    # pretrain: 16 GB for the patch embedding
    (((("model", "embed_dim"), 10**9),), "model.embed_dim = 1000000000"),
    # pretrain: MemoryError after 35 s of building the block list
    (((("model", "depth"), 10**9),), "model.depth = 1000000000"),
    # pretrain: 4 TB for the first MLP layer
    (((("model", "mlp_ratio"), 1e9),), "model.mlp_ratio = 1000000000.0"),
    # refine: 128 GB for the NN queue
    (((("refine", "queue_size"), 10**9),), "refine.queue_size = 1000000000"),
    # refine: 256 GB for the projection head
    (((("refine", "proj_out"), 10**9),), "refine.proj_out = 1000000000"),
    # refine: MemoryError on the list of view recipes
    (((("refine", "local_crops"), 10**9),), "refine.local_crops = 1000000000"),
    # evaluate: torch LinAlgError, the covariance of one val image's features is NaN (collapse analysis)
    (((("data", "val_size"), 1),), "data.val_size = 1"),
    # pretrain: "error: non-finite loss at step 0", no key named: a 1x1 grey patch has no unbiased variance
    (((("pretrain", "norm_pix_loss"), True), (("model", "patch_size"), 1)),
     "pretrain.norm_pix_loss=true with model.patch_size=1"),
    # refine: torch RuntimeError "Storage size calculation overflowed" making a 1e9-pixel local crop
    (((("refine", "local_crops"), 1), (("refine", "local_size"), 10**9)), "refine.local_size=1000000000 exceeds"),
    # evaluate: sklearn ValueError, k-means of 1 test image into 10 clusters
    (((("data", "test_limit"), 1),), "data.test_limit=1 keeps fewer test images than the 10 clusters"),
    # refine: "error: params: refine.ema = 0.95 ... after 0 steps; lower it or turn on refine.ema_warmup", the wrong
    # key and advice that cannot help: no EMA of 0 steps passes; refine.epochs now starts at 1
    (((("refine", "epochs"), 0),), "refine.epochs = 0"),
    # found by hand beside the fuzzer (the chain's refinement is nna): refine of objective mochi, 512 GB of mixing
    # coefficients
    (((("refine", "variants", "mae_nna", "objective"), "mochi"), (("refine", "mochi", "mixes"), 10**9)),
     "refine.mochi.mixes = 1000000000"),
    # not run: the same guards as embed_dim, depth, proj_out and mochi.mixes
    (((("model", "decoder_embed_dim"), 10**9),), "model.decoder_embed_dim = 1000000000"),
    (((("model", "decoder_depth"), 10**9),), "model.decoder_depth = 1000000000"),
    (((("refine", "proj_hidden"), 10**9),), "refine.proj_hidden = 1000000000"),
    (((("refine", "pred_hidden"), 10**9),), "refine.pred_hidden = 1000000000"),
    (((("refine", "mochi", "query_mixes"), 10**9),), "refine.mochi.query_mixes = 1000000000"),
]


@pytest.mark.parametrize("case, needle", FOUND, ids=[describe(c) for c, _ in FOUND])
def test_validate__found_case_names_the_key(case, needle):
    params = apply(chain_base(), case)
    message = validation_error(params)
    assert message is not None and needle in message, message
    check_config_error(message, params)
