"""Compare the headline metrics of two commits or DVC experiments, with each delta's noise, without re-running.

    python -m pipeline.compare A B [--metrics knn_cls,linear] [--figure PATH | --no-figure] [--repo DIR]

A and B are any git revision (sha, branch, tag, HEAD~1), a DVC experiment name (a ref refs/exps/<2>/<38>/<name>;
its short sha works too, being a git revision), or `workspace` for the working tree. Each side is read from
results/report/all_metrics.json at that revision (written and committed by the report stage); older commits
only have results/report/metrics.json, read instead with its non-numbers dropped.

The table gives, per model and metric, A, B and Δ = B - A (accuracies in %, deltas in points), and Δ is marked
`*` when |Δ| > 2σ. The noise σ of a delta follows the first rule that applies:
  1. seeds: both sides have n >= 2 training seeds and <m>_std (sample std over seeds):
     σ = sqrt(stdA²/nA + stdB²/nB), the standard error of a difference of two seed means.
  2. paired splits: m is fewshot_<k> or fewshot_<protocol>_<k> and both sides hold its accuracy on each fixed
     split, <m>_split<i> (the same support and query images on both sides): σ = std(B_i - A_i) / sqrt(splits),
     the standard error of the mean per-split difference (as summary.md's refinement table). Older files hold
     only <m>_split_se: σ = sqrt(seA² + seB²) ("splits"), unpaired and so conservative.
  3. paired images: m is knn_<pool> or linear (test), or val_knn_best or val_knn_last (the probe's val k-NN), each
     side has one training seed, and both sides hold its per-image correctness on the same images (evaluate's
     details.json or the probe's blocks.json under results/<stage>/<model>/seed<s>/, and equal hashes of that
     split in results/data/<dataset>/card.json): σ = std(b_i - a_i) / sqrt(n), McNemar's view.
  4. binomial: m is an accuracy (knn*, linear*, fewshot*, finetune*, kmeans_acc*, val_knn*) and both sides
     give the size of its split (val_size for val_knn*, test_size otherwise): σ = sqrt(a(1-a)/nA + b(1-b)/nB).
     It treats the two models' errors on the same images as independent, so it usually overstates σ.
  5. otherwise no noise estimate: the ±2σ cell stays blank and Δ is never marked.
The delta figure draws Δ per model and metric with ±2σ error bars.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.atomic import atomic_path
from pipeline.errors import ConfigError, DataError
from pipeline.analysis.deltas import correctness, probe_correctness
from pipeline.stats import difference_se, means_difference_se, paired_images_se, paired_se

REPORT_DIR = "results/report"
METRIC_FILES = ("all_metrics.json", "metrics.json")  # newest first; the second only in commits before the first
HEADLINE = ("knn_cls", "linear", "fewshot_1", "fewshot_10", "fewshot_msn_1", "finetune", "val_knn_best")
ACCURACY_PREFIXES = ("knn", "linear", "fewshot", "finetune", "kmeans_acc", "val_knn")
WORKSPACE = "workspace"
MARK = "*"
LEGEND = f"{MARK} |Δ| > 2σ; accuracies in %, Δ = B - A in points; σ rules: python -m pipeline.compare -h"

Metrics = dict[str, dict[str, float]]  # model -> metric -> value


@dataclass(frozen=True)
class Revision:
    """A resolved revision: what the user typed, and the commit to read (None for the working tree)."""
    name: str
    sha: str | None
    short: str


@dataclass(frozen=True)
class Row:
    """One model and metric of the table; None where a side lacks the value or no noise rule applies."""
    model: str
    metric: str
    a: float | None
    b: float | None
    sigma: float | None
    kind: str

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def marked(self) -> bool:
        return self.delta is not None and self.sigma is not None and abs(self.delta) > 2 * self.sigma


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def _experiment_sha(name: str, repo: Path) -> str | None:
    """The commit of DVC experiment `name`; DVC keeps each as refs/exps/<baseline[:2]>/<baseline[2:]>/<name>.
    A name used on several baselines resolves to the one on HEAD's, else it is ambiguous."""
    refs = _git(repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps").stdout.split("\n")
    hits = {}
    for line in filter(None, refs):
        sha, ref = line.split(" ", 1)
        parts = ref.split("/")
        if len(parts) == 5 and parts[4] == name:
            hits[parts[2] + parts[3]] = sha
    if len(set(hits.values())) > 1:
        head = _git(repo, "rev-parse", "HEAD").stdout.strip()
        if head in hits:
            return hits[head]
        raise ConfigError(f"experiment {name!r} exists on {len(hits)} baselines; give its sha instead: "
                          + ", ".join(sorted(s[:7] for s in hits.values())))
    return next(iter(hits.values()), None)


def resolve(rev: str, repo: Path) -> Revision:
    """Resolve `rev` (git revision, DVC experiment name or `workspace`) to a commit, so both sides name one."""
    if _git(repo, "rev-parse", "--git-dir").returncode != 0:
        raise ConfigError(f"{repo.resolve()} is not in a git repository (use --repo)")
    if rev == WORKSPACE:
        return Revision(rev, None, "working tree")
    found = None if rev.startswith("-") else _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    sha = found.stdout.strip() if found is not None and found.returncode == 0 else _experiment_sha(rev, repo)
    if sha is None:
        raise ConfigError(f"unknown revision {rev!r} (not a git revision, DVC experiment name or {WORKSPACE!r})")
    return Revision(rev, sha, _git(repo, "rev-parse", "--short", sha).stdout.strip())


def _read(rev: Revision, path: str, repo: Path) -> str | None:
    """The text of `path` (relative to the repo root) at `rev`, or None where it does not exist."""
    if rev.sha is None:
        file = Path(_git(repo, "rev-parse", "--show-toplevel").stdout.strip()) / path
        return file.read_text() if file.is_file() else None
    shown = _git(repo, "show", f"{rev.sha}:{path}")
    return shown.stdout if shown.returncode == 0 else None


def _numbers(raw: object, source: str) -> Metrics:
    """Keep each model's finite numbers; metrics.json also holds strings (objective, pretrained) and bools."""
    if not isinstance(raw, dict):
        raise DataError(f"{source}: expected an object of models, got {type(raw).__name__}")
    return {model: {k: float(v) for k, v in cols.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
            for model, cols in raw.items() if isinstance(cols, dict)}


def load_metrics(rev: Revision, repo: Path = Path(".")) -> Metrics:
    """Every model's numeric metrics at `rev`: all_metrics.json, else the older metrics.json."""
    for name in METRIC_FILES:
        path = f"{REPORT_DIR}/{name}"
        text = _read(rev, path, repo)
        if text is not None:
            source = f"{rev.name}:{path}"
            try:
                return _numbers(json.loads(text), source)
            except json.JSONDecodeError as err:
                raise DataError(f"{source}: not valid JSON ({err})") from err
    raise DataError(f"{rev.name} has no {REPORT_DIR}/{METRIC_FILES[0]} (was the report stage run and committed?)")


def is_accuracy(metric: str) -> bool:
    """Whether `metric` is a fraction of correct images, so it prints in % and has a binomial noise."""
    return metric.startswith(ACCURACY_PREFIXES)


def _list(rev: Revision, folder: str, repo: Path) -> list[str]:
    """The names in `folder` at `rev` (empty where it does not exist)."""
    if rev.sha is None:
        path = Path(_git(repo, "rev-parse", "--show-toplevel").stdout.strip()) / folder
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    shown = _git(repo, "ls-tree", "--name-only", f"{rev.sha}:{folder}")
    return shown.stdout.split() if shown.returncode == 0 else []


def split_id(rev: Revision, repo: Path, split: str) -> str | None:
    """What identifies the images of `split` (test or val) at `rev`: their hashes in its one prepared data card."""
    datasets = _list(rev, "results/data", repo)
    text = _read(rev, f"results/data/{datasets[0]}/card.json", repo) if len(datasets) == 1 else None
    sha = json.loads(text).get("sha256", {}) if text else {}
    return json.dumps({k: v for k, v in sorted(sha.items()) if k.endswith(f"_{split}")}) if sha else None


def _one_seed(rev: Revision, folder: str, name: str, repo: Path) -> dict | None:
    """`folder`/seed<s>/`name` of a model trained at one seed (None for several seeds, which compare by the seeds'
    rule, or where the file is absent)."""
    seeds = [s for s in _list(rev, folder, repo) if re.fullmatch(r"seed\d+", s)]
    text = _read(rev, f"{folder}/{seeds[0]}/{name}", repo) if len(seeds) == 1 else None
    return json.loads(text) if text else None


def load_correctness(rev: Revision, model: str, repo: Path, splits: tuple[str, ...] = ("test",)) -> dict[str, str]:
    """metric -> per-image correctness of `model` at `rev` on the `splits` both sides share: test accuracies from
    its one seed's evaluate details.json, val_knn_best and val_knn_last from its probe's blocks.json (none for
    several seeds or for files older than the record)."""
    out: dict[str, str] = {}
    baseline = model in ("random-init", "pixels")
    if "test" in splits and (details := _one_seed(rev, "results/evaluate/baselines" if baseline else
                                                   f"results/evaluate/{model}", "details.json", repo)):
        out.update({m: bits for m in ("knn_cls", "knn_mean_patch", "linear") if (bits := correctness(details, m))})
    if "val" in splits and not baseline and (blocks := _one_seed(rev, f"results/probe/{model}", "blocks.json", repo)):
        out.update(probe_correctness(blocks))
    return out


def noise(metric: str, a: dict[str, float], b: dict[str, float],
          bits: tuple[str | None, str | None] = (None, None)) -> tuple[float, str] | None:
    """σ of B - A for `metric` and the rule that gave it (module docstring), or None when no rule applies.

    Args:
        a, b: one model's metrics on each side (must both hold `metric`).
        bits: each side's per-image correctness behind `metric`, where both scored the same images.
    """
    std = f"{metric}_std"
    if min(a.get("n", 1), b.get("n", 1)) >= 2 and std in a and std in b:
        return means_difference_se(a[std], a["n"], b[std], b["n"]), "seeds"
    if re.fullmatch(r"fewshot_([a-z]+_)?\d+", metric):
        split = re.compile(rf"{metric}_split\d+")
        shared = sorted(k for k in a if split.fullmatch(k) and k in b)
        if len(shared) > 1:  # the same fixed splits on both sides: the deltas pair split by split
            return paired_se([b[k] for k in shared], [a[k] for k in shared]), "paired splits"
        se = f"{metric}_split_se"
        if se in a and se in b:
            return math.hypot(a[se], b[se]), "splits"
    if bits[0] and bits[1] and len(bits[0]) == len(bits[1]):
        return paired_images_se(bits[1], bits[0]), "paired images"
    size = "val_size" if metric.startswith("val_knn") else "test_size"
    pa, pb = a[metric], b[metric]
    if is_accuracy(metric) and a.get(size, 0) > 0 and b.get(size, 0) > 0 and 0 <= pa <= 1 and 0 <= pb <= 1:
        return difference_se(pa, a[size], pb, b[size]), "binomial"
    return None


def compare_table(a: Metrics, b: Metrics, metrics: tuple[str, ...] = HEADLINE,
                  correct: Callable[[str], tuple[dict[str, str], dict[str, str]]] | None = None) -> list[Row]:
    """One row per model and metric held by either side: models in B's order, then A's extras.

    Args:
        correct: model -> (A's, B's) per-image correctness by metric, when both sides scored the same images.
    """
    rows = []
    for model in [*b, *(m for m in a if m not in b)]:
        ma, mb = a.get(model, {}), b.get(model, {})
        ca, cb = correct(model) if correct and model in a and model in b else ({}, {})
        for metric in metrics:
            va, vb = ma.get(metric), mb.get(metric)
            if va is None and vb is None:
                continue
            est = noise(metric, ma, mb, (ca.get(metric), cb.get(metric))) if va is not None and vb is not None \
                else None
            rows.append(Row(model, metric, va, vb, *(est if est else (None, ""))))
    return rows


def _fmt(metric: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{100 * value:{'+' if signed else ''}.1f}" if is_accuracy(metric) else f"{value:{'+' if signed else ''}.3g}"


def markdown(rows: list[Row], rev_a: Revision, rev_b: Revision) -> str:
    """The table as markdown whose raw text lines up in a terminal: header line, table, legend."""
    cells = [["model", "metric", "A", "B", "Δ", "±2σ"]]
    for r in rows:
        delta = _fmt(r.metric, r.delta, signed=True) + (MARK if r.marked else "")
        band = f"±{_fmt(r.metric, 2 * r.sigma)} {r.kind}" if r.sigma is not None else ""
        cells.append([r.model, r.metric, _fmt(r.metric, r.a), _fmt(r.metric, r.b), delta, band])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    right = (False, False, True, True, True, False)

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if r else "-" * (w + 2) for w, r in zip(widths, right)) + "|"
    head = f"A = {rev_a.name} ({rev_a.short}), B = {rev_b.name} ({rev_b.short})"
    return "\n".join([head, "", line(cells[0]), rule, *map(line, cells[1:]), "", LEGEND])


def delta_figure(rows: list[Row], path: str | Path, title: str) -> None:
    """Bars of Δ per metric (one colour per model) with ±2σ error bars, `*` over marked ones; PNG, atomic."""
    import matplotlib  # here, not at the top: the table alone should print without loading matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import seaborn as sns

    paired = [r for r in rows if r.delta is not None]  # a value on one side only has no bar
    metrics = list(dict.fromkeys(r.metric for r in paired))
    models = list(dict.fromkeys(r.model for r in paired))
    width = 0.8 / max(len(models), 1)
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(metrics) + 1), 3.2))
    for i, (model, colour) in enumerate(zip(models, sns.color_palette(n_colors=len(models)))):
        drawn = [r for r in paired if r.model == model]
        scale = [100 if is_accuracy(r.metric) else 1 for r in drawn]
        x = [metrics.index(r.metric) - 0.4 + width * (i + 0.5) for r in drawn]
        y = [s * r.delta for s, r in zip(scale, drawn)]
        err = [2 * s * r.sigma if r.sigma is not None else math.nan for s, r in zip(scale, drawn)]
        ax.bar(x, y, width, yerr=err, color=colour, label=model, capsize=2)
        for xi, yi, ei, r in zip(x, y, err, drawn):
            if r.marked:
                ax.text(xi, yi + math.copysign(ei, yi), MARK, ha="center", va="bottom" if yi >= 0 else "top")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(metrics)), metrics, rotation=30, ha="right")
    ax.set(ylabel="Δ B - A (points; raw for non-accuracies)", title=title)
    if models:
        ax.legend(title="model", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", metavar="A", help="git revision, DVC experiment name, or 'workspace'")
    parser.add_argument("b", metavar="B", help="the same; deltas are B - A")
    parser.add_argument("--metrics", help=f"comma-separated metrics (default: {','.join(HEADLINE)})")
    parser.add_argument("--figure", help="delta figure path (default: compare/<A>..<B>.png)")
    parser.add_argument("--no-figure", action="store_true", help="print the table only")
    parser.add_argument("--repo", type=Path, default=Path("."), help="directory inside the git repo (default: .)")
    args = parser.parse_args(argv)
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip()) if args.metrics else HEADLINE
    try:
        if not metrics:
            raise ConfigError("--metrics names no metric")
        rev_a, rev_b = resolve(args.a, args.repo), resolve(args.b, args.repo)
        shared = tuple(s for s in ("test", "val")
                       if (ida := split_id(rev_a, args.repo, s)) is not None and ida == split_id(rev_b, args.repo, s))
        correct = (lambda model: (load_correctness(rev_a, model, args.repo, shared),
                                  load_correctness(rev_b, model, args.repo, shared))) if shared else None
        rows = compare_table(load_metrics(rev_a, args.repo), load_metrics(rev_b, args.repo), metrics, correct)
        absent = [m for m in metrics if args.metrics and m not in {r.metric for r in rows}]
        if absent:  # most likely a typo; the defaults may be absent from old reports
            raise ConfigError(f"--metrics: {', '.join(absent)} in neither {args.a} nor {args.b}")
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(rows, rev_a, rev_b), flush=True)
    if not args.no_figure:
        path = Path(args.figure or f"compare/{_safe(args.a)}..{_safe(args.b)}.png")
        delta_figure(rows, path, f"{rev_a.name} ({rev_a.short}) → {rev_b.name} ({rev_b.short})")
        print(f"figure: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
