"""Per-row records (epochs of a training curve, blocks of a probe) as CSV text for `dvc plots`."""
from __future__ import annotations


def records_csv(records: list[dict[str, float]]) -> str:
    """Rows of equal keys as CSV text, numbers with six significant digits."""
    header = list(records[0])
    lines = [",".join(header)]
    lines += [",".join(f"{r[h]:.6g}" for h in header) for r in records]
    return "\n".join(lines) + "\n"
