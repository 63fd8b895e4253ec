"""Workspace commands that keep Snakemake and DVC in agreement; the Makefile's run/repro/checkout/remote/push/pull.

    python -m pipeline.workspace run [--cores N]   # snakemake, dvc.yaml, dvc commit -f, snakemake --touch
    python -m pipeline.workspace repro [ARGS]      # dvc.yaml from the rules, dvc repro [ARGS], snakemake --touch
    python -m pipeline.workspace checkout REV      # git checkout, dvc checkout, snakemake --touch
    python -m pipeline.workspace remote [URL]      # default DVC remote (../<repo>-dvc-storage) in .dvc/config
    python -m pipeline.workspace push [--all-commits] | pull

Every command that changes results/ holds `.pipeline.lock` (flock(2), as flock(1) took it before); a second one
exits 75 with one line. The lock is passed down to snakemake and dvc, so it is held while either still runs.

A run killed hard (SIGKILL to its process group, the OOM killer) leaves Snakemake's `.snakemake/locks/*`, and
the next snakemake stops with LockException. Holding `.pipeline.lock`, no run of ours is active here, so such a
lock is stale: it is removed (`snakemake --unlock`, one note line) unless a snakemake process started by hand
still works in this directory (Linux /proc), and the rerun resumes from the stages' checkpoints. DVC needs no
help: its `.dvc/tmp/lock` is an flock the kernel drops, and `dvc repro` removes `.dvc/tmp/rwlock` entries of
dead pids itself, with a warning (seen after a `kill -9` of `dvc repro` mid-stage, which then resumed; the
kill test of tests/dag/test_workspace.py replays such entries). Only a dead pid reused by a live process would
still block it, and DVC's error then names the file to remove.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from pipeline.errors import PipelineError

PIPELINE_LOCK = ".pipeline.lock"
SNAKEMAKE_LOCKS = Path(".snakemake/locks")
REMOTE_NAME = "storage"
EXIT_BUSY = 75  # EX_TEMPFAIL, what `flock -E 75` returned before
TOUCH = ["snakemake", "--touch", "--cores", "1", "-q"]
WRITE_DVC_YAML = ["python", "-m", "pipeline.dvc_yaml"]  # dvc.yaml from the rules (rewritten only when it changes)


class WorkspaceError(PipelineError):
    """The workspace is not in a state the command can act on (busy, uncommitted changes, no remote)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def tool_path(name: str) -> str:
    """The venv's copy of a tool (next to this interpreter), else the one on PATH, else the bare name."""
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else shutil.which(name) or name


def call(args: list[str], lock_fd: int | None = None, quiet: bool = False) -> int:
    """Run a tool with the venv's bin first on PATH (snakemake's jobs call `python`), returning its exit code.

    Args:
        args: the command; args[0] is looked up with `tool_path` unless it is git.
        lock_fd: the `.pipeline.lock` descriptor, inherited so the lock outlives this process while the tool runs.
        quiet: capture the output and show it only if the tool fails.
    """
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    argv = [args[0] if args[0] == "git" else tool_path(args[0]), *args[1:]]
    proc = subprocess.run(argv, env=env, pass_fds=() if lock_fd is None else (lock_fd,),
                          capture_output=quiet, text=True)
    if quiet and proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
    return proc.returncode


def call_all(commands: list[list[str]], lock_fd: int | None = None) -> int:
    """Run commands in order, stopping at the first that fails; its exit code (0 if all succeed)."""
    for args in commands:
        code = call(args, lock_fd)
        if code != 0:
            return code
    return 0


@contextlib.contextmanager
def pipeline_lock(root: Path = Path(".")) -> Iterator[int]:
    """Hold `.pipeline.lock` (flock, exclusive, non-blocking) and yield its descriptor.

    Raises:
        WorkspaceError: another run holds it (exit code 75).
    """
    fd = os.open(root / PIPELINE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkspaceError("another run holds .pipeline.lock in this workspace", EXIT_BUSY) from None
        yield fd
    finally:
        os.close(fd)


def snakemake_pids(root: Path = Path(".")) -> list[int]:
    """Pids of snakemake processes whose working directory is `root` (from /proc; empty where there is none)."""
    here, pids = root.resolve(), []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = entry.joinpath("cmdline").read_bytes().split(b"\0")[:3]
            if int(entry.name) != os.getpid() and any(Path(a.decode(errors="replace")).name == "snakemake"
                                                     for a in argv) and Path(os.readlink(entry / "cwd")) == here:
                pids.append(int(entry.name))
        except (OSError, ValueError):  # gone meanwhile, or another user's process
            continue
    return pids


def clear_stale_snakemake_lock(lock_fd: int, root: Path = Path(".")) -> int:
    """Remove Snakemake's lock left by a killed run; call only while holding `.pipeline.lock`.

    Returns:
        0, or snakemake --unlock's exit code.
    Raises:
        WorkspaceError: a snakemake started outside these commands still runs here (exit code 75).
    """
    if not any((root / SNAKEMAKE_LOCKS).glob("*.lock")):
        return 0
    running = snakemake_pids(root)
    if running:
        raise WorkspaceError(f"snakemake (pid {running[0]}) is running in this workspace outside `make`; "
                             f"wait for it to finish", EXIT_BUSY)
    code = call(["snakemake", "--unlock", "--cores", "1", "-q"], lock_fd, quiet=True)
    if code == 0:
        print(f"note: removed a stale Snakemake lock left by a killed run (no other run holds {PIPELINE_LOCK})",
              file=sys.stderr)
    return code


def run(cores: str) -> int:
    """Snakemake runs the DAG; `dvc commit -f` records the hashes; `snakemake --touch` re-records Snakemake's view.

    The commit relinks DVC-cached outputs (new mtimes), hence the touch. `--rerun-incomplete`: under the lock, a
    job marked incomplete belongs to a killed run, never to one still writing.
    """
    with pipeline_lock() as fd:
        return clear_stale_snakemake_lock(fd) or call_all([
            ["snakemake", "--cores", cores, "--rerun-incomplete"], WRITE_DVC_YAML, ["dvc", "commit", "-f", "-q"],
            TOUCH], fd)


def repro(dvc_args: list[str]) -> int:
    """DVC runs the DAG (it clears its own stale locks); `snakemake --touch` then records it for Snakemake.

    Args:
        dvc_args: passed on to `dvc repro` (targets, -f, -s, ...).
    """
    with pipeline_lock() as fd:
        return clear_stale_snakemake_lock(fd) or call_all([WRITE_DVC_YAML, ["dvc", "repro", *dvc_args], TOUCH], fd)


def uncommitted() -> int:
    """How many tracked files differ from HEAD (staged or not)."""
    proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise WorkspaceError(f"git status failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr else ''}")
    return len(proc.stdout.splitlines())


def checkout(rev: str) -> int:
    """git checkout `rev`, restore its outputs from DVC's cache and record them as current for Snakemake."""
    with pipeline_lock() as fd:
        changed = uncommitted()
        if changed:
            raise WorkspaceError(f"{changed} tracked file(s) have uncommitted changes (git status); commit or "
                                 f"stash them before checking out {rev}")
        if subprocess.run(["git", "cat-file", "-e", f"{rev}:dvc.lock"], capture_output=True).returncode != 0:
            raise WorkspaceError(f"{rev} records no results (no dvc.lock there, or no such revision); "
                                 f"use git checkout {rev} to go there without them")
        code = clear_stale_snakemake_lock(fd) or call(["git", "checkout", "-q", rev], fd)
        if code == 0 and call(["dvc", "checkout"], fd) != 0:
            raise WorkspaceError(f"git is at {rev} but DVC could not restore all its outputs (above): `make pull` "
                                 f"fetches them from the remote, `make run` remakes them")
        return code or call(TOUCH, fd)


def default_remote_url() -> Path:
    """A folder beside the repo: ../<repo folder>-dvc-storage, absolute."""
    root = Path.cwd().resolve()
    return root.parent / f"{root.name}-dvc-storage"


def remote(url: str | None) -> int:
    """Make `url` (default: `default_remote_url`) the default DVC remote, in .dvc/config so clones get it."""
    if url is None or "://" not in url:  # local paths absolute: a relative one would resolve per clone
        url = str(Path(url).expanduser().resolve() if url else default_remote_url())
    code = call(["dvc", "remote", "add", "-d", "-f", REMOTE_NAME, url], quiet=True)
    if code == 0:
        print(f"DVC remote '{REMOTE_NAME}' (default): {url}\n"
              f"commit .dvc/config so clones use it: git add .dvc/config && git commit -m 'DVC remote'")
    return code


def require_remote() -> None:
    """Raises WorkspaceError unless a default DVC remote is configured."""
    proc = subprocess.run([tool_path("dvc"), "remote", "default"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise WorkspaceError("no default DVC remote is configured; set one with `make remote [URL=...]`")


def push(all_commits: bool) -> int:
    """Upload the cache of the workspace's outputs (or of every commit's) to the default remote."""
    require_remote()
    return call(["dvc", "push", *(["--all-commits"] if all_commits else [])])


def pull() -> int:
    """Download and check out the outputs from the default remote, then record them for Snakemake (a fresh clone
    has no Snakemake metadata, so it would plan the whole DAG)."""
    require_remote()
    with pipeline_lock() as fd:
        return clear_stale_snakemake_lock(fd) or call_all([["dvc", "pull"], TOUCH], fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.workspace", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="snakemake, dvc commit -f, snakemake --touch (make run)")
    p_run.add_argument("--cores", default="all", help="snakemake --cores: a number or 'all' (default: all)")
    sub.add_parser("repro", help="dvc repro, snakemake --touch (make repro); further arguments go to dvc repro")
    p_checkout = sub.add_parser("checkout", help="git checkout, dvc checkout, snakemake --touch")
    p_checkout.add_argument("rev", metavar="REV", help="commit, branch or tag")
    p_remote = sub.add_parser("remote", help="set the default DVC remote in .dvc/config")
    p_remote.add_argument("url", metavar="URL", nargs="?", help="any DVC URL or folder (default: "
                                                                "../<repo folder>-dvc-storage)")
    p_push = sub.add_parser("push", help="dvc push to the default remote")
    p_push.add_argument("--all-commits", action="store_true", help="every commit's outputs, not only the workspace's")
    sub.add_parser("pull", help="dvc pull, snakemake --touch")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "repro":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "run" and args.cores != "all" and not (args.cores.isdigit() and int(args.cores) > 0):
        parser.error(f"--cores: a positive number or 'all', got {args.cores!r}")
    commands = {"run": lambda: run(args.cores), "repro": lambda: repro(extra), "checkout": lambda: checkout(args.rev),
                "remote": lambda: remote(args.url), "push": lambda: push(args.all_commits), "pull": pull}
    try:
        return commands[args.command]()
    except WorkspaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code


if __name__ == "__main__":
    sys.exit(main())
