"""Metrics over training seeds: every metric of a model as mean, sample std and n over the seeds that ran it.

The DAG runs each model once per seed of params `seeds` (the {seed} wildcard of rules/); the report builds one table
per seed and aggregates them here. A model that ran once (the baselines: they depend on the data seed only) keeps
n = 1 and a blank std, never a std of 0 over copies of one run.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import pandas as pd

# the paragraph summary.md puts above the table
SPREAD_NOTE = """Every metric of a trained model is the mean ± sample std over the training seeds (params `seeds`; n = how
many); the baselines (random-init, pixels) ran once, from the data seed. summary.csv holds the means under the
metric's name, then n and <metric>_std.

"""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each numeric metric of `runs` (one dict per seed) as {"mean", "std", "n"} over the runs that hold it.

    std is the sample standard deviation (ddof=1) for n > 1 and NaN for n = 1 (one run has no spread to measure).
    A mean of integers that is an integer stays an int (a single seed's table keeps its values as they were).
    Values that are not numbers (names, flags) and NaN are left out; a key without any number is absent.
    """
    out: dict[str, dict[str, float]] = {}
    for key in dict.fromkeys(k for run in runs for k in run):
        values = [run[key] for run in runs if _is_number(run.get(key))]
        if not values:
            continue
        n = len(values)
        mean = math.fsum(values) / n
        if all(isinstance(v, int) for v in values) and mean.is_integer():
            mean = int(mean)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
        out[key] = {"mean": mean, "std": std, "n": n}
    return out


def _common(values: list[Any]) -> Any:
    """One value for a column that is not a metric: the shared one, any() of flags, else the distinct ones joined."""
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    distinct = list(dict.fromkeys(values))
    if len(distinct) <= 1:
        return distinct[0] if distinct else math.nan
    if all(isinstance(v, bool) for v in distinct):
        return any(distinct)
    return "/".join(map(str, distinct))


def aggregate_table(tables: list[pd.DataFrame], single: Iterable[str] = ()) -> pd.DataFrame:
    """One row per model from per-seed comparison tables: each metric column holds the mean, then `n` (the seeds
    aggregated), then `<metric>_std` for every metric column, and `<metric>_n` where a metric misses some seeds.

    Args:
        tables: one table per seed, rows keyed by the "model" column (as pipeline.analysis.summary builds them).
        single: models that ran once whatever the seed (baselines): their first row only, n = 1.
    """
    single = set(single)
    columns = list(dict.fromkeys(c for t in tables for c in t.columns))
    models = list(dict.fromkeys(m for t in tables for m in t["model"]))
    rows, stds, counts = [], [], []
    for model in models:
        runs = [rec for t in tables for rec in t[t["model"] == model].to_dict("records")]
        runs = runs[:1] if model in single else runs
        stats = aggregate([{k: v for k, v in r.items() if k != "model"} for r in runs])
        rows.append({c: stats[c]["mean"] if c in stats else _common([r.get(c, math.nan) for r in runs])
                     for c in columns} | {"model": model, "n": len(runs)})
        stds.append({f"{c}_std": s["std"] for c, s in stats.items()})
        counts.append({f"{c}_n": s["n"] for c, s in stats.items()})
    short = {c for cnt, row in zip(counts, rows) for c, k in cnt.items() if k != row["n"]}
    order = columns + ["n"] + [f"{c}_std" for c in columns if c != "model"]
    order += [f"{c}_n" for c in columns if f"{c}_n" in short]
    table = pd.DataFrame([{**r, **s, **{c: k for c, k in n.items() if c in short}}
                          for r, s, n in zip(rows, stds, counts)])
    return table.reindex(columns=[c for c in order if c in table.columns])


def markdown_with_spread(table: pd.DataFrame, render: Callable[[pd.DataFrame], str]) -> str:
    """`render` (a markdown table renderer) of the means with ' ± std' appended to every cell that has a std.

    The std columns are rendered by the same renderer, so a std is shown in its metric's unit (accuracies in
    points); `n` stays a column of its own.
    """
    means = table[[c for c in table.columns if not c.endswith(("_std", "_n"))]]
    spread = pd.DataFrame({c: table[f"{c}_std"] if f"{c}_std" in table else math.nan for c in means.columns},
                          index=table.index)
    spread["model"], spread["n"] = means["model"], means.get("n", math.nan)
    mean_lines, std_lines = render(means).splitlines(), render(spread).splitlines()
    lines = mean_lines[:2]  # the header and the rule
    for mean_line, std_line in zip(mean_lines[2:], std_lines[2:]):
        cells = [m + (f" ± {s}" if s and c not in ("model", "n") else "")
                 for c, m, s in zip(means.columns, _cells(mean_line), _cells(std_line))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cells(line: str) -> list[str]:
    """The cells of a rendered row '| a | b |' (an empty cell is '')."""
    return [c.strip() for c in line[2:-2].split(" | ")]
