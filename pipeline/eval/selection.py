"""Choices made on the validation split, recorded with what a reader needs to trust them.

A hyperparameter picked from a grid (the linear probe's lr, few-shot C) records the grid, the val score of each
value, the binomial standard error of the best score, the values tied with it (within one standard error), the
pick and `edge`: the grid caps the selection. `edge` is true when the best val score sits at the grid's smallest or
largest value and no interior value is within one standard error of it: the curve still rises at the grid's end,
so the optimum may lie outside the grid and the number may understate the encoder. The stages then log a warning
naming the params key to widen, and summary.md marks the number. A best value at an end that an interior value
ties is a plateau (val noise decides the argmax there, and a wider grid would find the same accuracy): not an
edge. With two grid values there is no interior, and a best value is always an edge.

Rules:
- `argmax`: the best val score; exact ties go to the smaller value.
- `one_se`: the smallest value whose val score is within one standard error of the best: the one-standard-error
  rule (Hastie, Tibshirani and Friedman, ESL 2nd ed., 7.10; glmnet's lambda.1se), for a grid ordered from the
  strongest to the weakest regularization (few-shot C). On a plateau, where val noise alone decides the argmax,
  it takes the most regularized tied value instead of a random one, so the pick is stable across seeds.
"""
from __future__ import annotations

import logging

from pipeline.stats import within_one_se

log = logging.getLogger(__name__)

GRID_RULES = ("argmax", "one_se")


def grid_pick(scores: dict[float, float], key: str, n: int, rule: str = "argmax") -> dict:
    """The grid value chosen by `rule` (see the module doc) from val accuracies, with its grid and edge flag.

    Args:
        scores: grid value -> val accuracy on n images; at least two values.
        key: the dotted params key that holds the grid (named in the warning and in summary.md).
        n: validation images behind each accuracy (the n of the standard error).
    Returns:
        {"key", "rule", "grid": ascending values, "val": their accuracies, "best": the grid value with the best
         accuracy, "se": its standard error, "tied": grid values within one SE of it, "pick", "edge": the best is
         an end of the grid and no interior value is tied with it (see the module doc)}.
    """
    if len(scores) < 2:  # the schema asks for two values; a single one is no selection
        raise ValueError(f"{key}: a selection needs at least two grid values, got {sorted(scores)}")
    if rule not in GRID_RULES:
        raise ValueError(f"unknown grid rule {rule!r} (known: {', '.join(GRID_RULES)})")
    grid = sorted(scores)
    best, se, tied = within_one_se([scores[v] for v in grid], n)
    pick = grid[best] if rule == "argmax" else grid[tied[0]]
    edge = best in (0, len(grid) - 1) and not any(0 < i < len(grid) - 1 for i in tied)
    return {"key": key, "rule": rule, "grid": grid, "val": [scores[v] for v in grid], "best": grid[best], "se": se,
            "tied": [grid[i] for i in tied], "pick": pick, "edge": edge}


def edge_message(name: str, selection: dict) -> str | None:
    """One line saying that `name`'s grid caps its selection and which key to widen; None when it does not."""
    if not selection["edge"]:
        return None
    grid, best = selection["grid"], selection["best"]
    end = "largest" if best == grid[-1] else "smallest"
    return (f"{name}: val accuracy is best at {best:g}, the {end} value of {selection['key']} "
            f"[{', '.join(f'{v:g}' for v in grid)}], and no interior value is within one standard error of it; "
            f"the optimum may lie beyond: widen {selection['key']}")


def warn_edge_picks(selections: dict[str, dict]) -> list[str]:
    """Log a WARNING for every edge pick of `selections` (name -> `grid_pick` record); returns the lines."""
    lines = [m for name, sel in selections.items() if (m := edge_message(name, sel))]
    for line in lines:
        log.warning("%s", line)
    return lines
