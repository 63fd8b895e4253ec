"""A params profile's run, kept as a study: `make study S=<profile>` (python -m pipeline.study <profile>).

The profile's DAG runs in a scratch copy of the repository's tracked files, `.studies/<profile>/` (gitignored; a
killed study resumes there), so main's params.yaml, results/ and dvc.lock never change. Its report then goes to
`studies/<profile>/`, the committed record of the study: summary.md and .csv, all_metrics.json, the figures, the
per-block k-NN curves, the params it ran with and STUDY.md (the profile, the code commit it ran on, the command
and its wall time).

    python -m pipeline.study seeds3 --reuse-results   # start from results/ of the default run: the jobs the profile
                                                      # leaves unchanged (seed 0 of seeds3) are not run again
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pipeline import config
from pipeline.errors import ConfigError

SCRATCH = Path(".studies")
STUDIES = Path("studies")
COMMIT_FILE = ".study-commit"  # in the scratch: the commit its code was copied from (a resumed study keeps it)
KEPT = ("results/report", "results/plots/knn_blocks", "results/plots/recon_blocks")  # what a study keeps


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()


def prepare_scratch(profile: str, work: Path, reuse_results: bool) -> None:
    """The tracked files in `work` with the profile switched in; with `reuse_results`, results/ and Snakemake's
    records of the workspace come along (file times kept), so unchanged jobs are not run again."""
    if reuse_results and not any(Path(".snakemake/metadata").glob("*")):  # `snakemake --touch` records times only
        raise ConfigError("study: --reuse-results needs the Snakemake records of the run that made results/ "
                          "(.snakemake/metadata is empty here: run `make run` first, or drop --reuse-results)")
    work.mkdir(parents=True)
    for rel in _git("ls-files", "-z").split("\0"):
        if rel and not rel.startswith(("results/", "studies/")) and Path(rel).is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(rel, work / rel)
    if reuse_results:
        # with Snakemake's records (params, code) of those jobs: a key the profile changes reruns what reads it
        for rel in ("results", ".snakemake/metadata"):
            if Path(rel).exists():
                shutil.copytree(rel, work / rel, symlinks=True)
    config.switch(work / "profiles" / profile / "params.yaml", work / "params.yaml")


def record(profile: str, work: Path, out: Path, command: str, seconds: float, commit: str) -> None:
    """Copy the study's report, curves and params to `out` and write STUDY.md."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for rel in KEPT:
        shutil.copytree(work / rel, out / Path(rel).name, ignore=shutil.ignore_patterns(".lock", ".tmp-*"))
    for metrics in sorted(work.glob("results/pretrain/*/seed*/metrics.json")):  # the loss and MFF's fusion weights
        dest = out / metrics.relative_to(work / "results")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(metrics, dest)
    shutil.copy2(work / "params.yaml", out / "params.yaml")
    (out / "STUDY.md").write_text(
        f"# Study: {profile}\n\n"
        f"- profile: `profiles/{profile}/params.yaml` merged into params.yaml (the result: `params.yaml` here)\n"
        f"- code: commit {commit}\n"
        f"- command: {command}\n"
        f"- wall time: {seconds / 60:.1f} min on this machine ({datetime.date.today().isoformat()})\n"
        f"- report: `report/summary.md` (print it: `cat studies/{profile}/report/summary.md`), `report/summary.csv`,"
        f" `report/all_metrics.json`, the figures in `report/`, per-block k-NN curves in `knn_blocks/`, per-block reconstruction losses in `recon_blocks/`\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.study", description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="a folder of profiles/ with a params.yaml")
    parser.add_argument("--cores", default="all", help="snakemake --cores (default: all)")
    parser.add_argument("--reuse-results", action="store_true",
                        help="start from this workspace's results/ (jobs the profile leaves unchanged do not run)")
    args = parser.parse_args(argv)
    overlay = Path("profiles") / args.profile / "params.yaml"
    try:
        if not overlay.is_file():
            raise ConfigError(f"study: no profile {args.profile!r} ({overlay} is missing)")
        work = SCRATCH / args.profile
        if not work.exists():  # else: a killed study resumes in its scratch copy, with the code it was copied with
            prepare_scratch(args.profile, work, args.reuse_results)
            dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "pipeline", "rules", "Snakefile",
                         "profiles")
            (work / COMMIT_FILE).write_text(_git("rev-parse", "--short", "HEAD")
                                            + (" (with uncommitted changes)" if dirty else "") + "\n")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    commit = (work / COMMIT_FILE).read_text().strip() if (work / COMMIT_FILE).is_file() else "unknown (an older scratch)"
    command = f"snakemake --cores {args.cores} --rerun-incomplete"
    t0 = time.perf_counter()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    code = subprocess.run(command.split(), cwd=work, env=env).returncode
    if code != 0:
        print(f"error: the study's DAG failed in {work} (its logs/); rerun the same command to resume", file=sys.stderr)
        return code
    how = f"make study S={args.profile}" + (" ARGS=--reuse-results (the jobs it shares with the default run were "
                                            "not run again)" if args.reuse_results else "")
    record(args.profile, work, STUDIES / args.profile, how, time.perf_counter() - t0, commit)
    print(f"study {args.profile}: {STUDIES / args.profile}/ (commit it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
