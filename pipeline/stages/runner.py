"""What every stage does at its edge: logging, params loading, the one-line error, the exit code."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from pipeline import config
from pipeline.errors import PipelineError
from pipeline.lock import output_lock

log = logging.getLogger("pipeline")
_LOCK_HELD = "PIPELINE_LAUNCHER_HOLDS_LOCK"


def code_version() -> str:
    """The git commit of the code (with '+dirty' if the worktree differs), or 'unknown' outside git; in a study's
    scratch copy (pipeline/study.py, gitignored inside the repository) the commit it was copied from."""
    copied = Path(__file__).resolve().parent.parent.parent / ".study-commit"
    if copied.is_file():
        return copied.read_text().strip()
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", ":/pipeline"], capture_output=True, text=True,
                               timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev or "unknown") + ("+dirty" if dirty else "")


def load_stage_params(stage: str, keys: tuple[str, ...], path: str, variant: str | None = None,
                      kinds: tuple[str, ...] = ("pretrain", "refine"), seed: int | None = None) -> dict:
    """Validate the params file and return only the stage's declared `keys` (with {variant} filled in).

    `variant` must name an entry of `<kind>.variants` for one of `kinds` (probe and evaluate take either kind).
    `seed` (the stage's --seed: one of params `seeds`, given by the DAG) replaces params `seed` as the seed of
    everything the stage draws; the data (val split, few-shot splits) stays the one prepare made from `seed`.
    """
    params = config.load_params(path)
    if variant is not None:
        config.check_variant(params, variant, kinds)
    keys = [k.replace("{variant}", variant or "") for k in keys]
    selected = config.select(params, keys)
    if seed is not None and "seed" in selected:
        selected["seed"] = seed
    log.info("stage %s%s | code %s | params %s", stage, f"@{variant}" if variant else "", code_version(),
             json.dumps(selected, sort_keys=True))
    return selected


def fingerprint(*parts: object) -> str:
    """A short stable hash of JSON-able parts (params, input hashes): tags resumable checkpoints."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_parser(stage: str, doc: str, variant: bool, paths: dict[str, str]) -> argparse.ArgumentParser:
    """The argv of a stage: --variant and --seed (for per-variant stages), one required path option per entry of
    `paths` (name -> help), and --params."""
    parser = argparse.ArgumentParser(prog=f"python -m pipeline.stages.{stage}", description=doc.strip().splitlines()[0])
    if variant:
        parser.add_argument("--variant", required=True, help="a key of pretrain.variants or refine.variants")
        parser.add_argument("--seed", type=int, default=None,
                            help="the training seed (one of params seeds); replaces params seed in this stage")
    for name, help_text in paths.items():
        parser.add_argument(f"--{name}", required=True, type=Path, help=help_text)
    parser.add_argument("--params", default="params.yaml", help="the params file, validated on start")
    return parser


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _torchrun(nproc: int, argv: list[str]) -> int:
    """Start this stage again as `torchrun --standalone --nproc-per-node nproc -m <stage> argv` and wait."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    module = sys.modules["__main__"].__spec__.name
    os.environ[_LOCK_HELD] = "1"  # this process holds the --out lock for its ranks
    try:
        torchrun_main(["--standalone", f"--nproc-per-node={nproc}", "-m", module, *argv])
    except ChildFailedError as err:
        # a rank that failed on its own exits > 0; torchrun then stops the others with a signal (exit code < 0)
        codes = sorted({f.exitcode for f in err.failures.values() if f.exitcode > 0})
        failed = sum(f.exitcode > 0 for f in err.failures.values())
        stopped = len(err.failures) - failed
        print(f"error: {module} failed in {failed} of {nproc} processes (exit codes {codes})"
              + (f"; torchrun stopped {stopped} other" if stopped else "") + "; their error lines are above",
              file=sys.stderr)
        return 2
    return 0


def _entries(out: str | None) -> set[Path]:
    return set(Path(out).iterdir()) if out and Path(out).is_dir() else set()


def _remove_new_entries(out: str | None, before: set[Path]) -> None:
    """A stage that stops with an error leaves its --out folder as it found it (a DVCLive folder made on start, a
    half-written log), keeping only resumable checkpoints, which let the fixed rerun continue."""
    import shutil

    for path in _entries(out) - before:
        if path.name.startswith("resume") or path.name == ".lock":
            continue
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def run(main: Callable[[list[str] | None], None], argv: list[str] | None = None, distributed: bool = False) -> int:
    """Run a stage's main under the lock of its --out folder.

    A PipelineError (a bad param, missing data, a held lock...) becomes one 'error:' line on stderr and exit code 2.
    A `distributed` stage with runtime.nproc > 1 started as one process starts itself again under torchrun; under
    torchrun (started so, or by hand) rank 0 holds the lock and writes, every rank trains.
    """
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    out = _option(argv, "--out")
    ranked = "LOCAL_RANK" in os.environ
    lock = out and not (ranked and (os.environ.get("RANK", "0") != "0" or os.environ.get(_LOCK_HELD)))
    try:
        with output_lock(out) if lock else contextlib.nullcontext():
            if distributed and not ranked:
                nproc = config.load_params(_option(argv, "--params") or "params.yaml")["runtime"]["nproc"]
                if nproc > 1:
                    return _torchrun(nproc, argv)
            before = _entries(out)
            try:
                main(argv)
            except PipelineError:
                _remove_new_entries(out, before)
                raise
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
