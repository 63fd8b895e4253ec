"""Per-row records (epochs of a training curve, blocks of a probe) as CSV text for `dvc plots`, and where a stage
writes them."""
from __future__ import annotations

from pathlib import Path


def records_csv(records: list[dict[str, float]]) -> str:
    """Rows of equal keys as CSV text, numbers with six significant digits."""
    header = list(records[0])
    lines = [",".join(header)]
    lines += [",".join(f"{r[h]:.6g}" for h in header) for r in records]
    return "\n".join(lines) + "\n"


def plot_csv(plots: Path, kind: str, variant: str, seed: int | None) -> Path:
    """A stage's plot data: results/plots/<kind>/<model>/seed<seed>.csv (<model>.csv without --seed), the same
    seed level as its --out (results/<stage>/<model>/seed<seed>); a <kind> folder is one DVC plot of its files."""
    return plots / kind / (f"{variant}/seed{seed}.csv" if seed is not None else f"{variant}.csv")


def fewshot_record(details: dict, protocol: str | None = None) -> dict:
    """evaluate details.json's few-shot result of `protocol` (None: the headline), {shots: {"mean", "runs", ...}}.

    The headline protocol (details["fewshot_headline"]) is stored under "fewshot", every other one under
    "fewshot_<protocol>". {} when the file holds none (older files hold the headline only)."""
    if protocol is None or protocol == details.get("fewshot_headline"):
        return details.get("fewshot", {})
    return details.get(f"fewshot_{protocol}", {})


def fewshot_protocols(details: dict) -> list[str | None]:
    """The few-shot protocols a details.json holds: None (the headline) first, then each other one by name."""
    return [None, *(k.removeprefix("fewshot_") for k in details
                    if k.startswith("fewshot_") and k != "fewshot_headline")]
