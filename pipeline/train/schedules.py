"""Schedules as pure functions of the global step."""
from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base: float, final: float) -> float:
    """Linear warmup from 0 to `base` over `warmup_steps`, then half-cosine from `base` to `final`.

    Per-iteration form of MAE's `util/lr_sched.py` (facebookresearch/mae).
    Returns `base` * step / warmup_steps during warmup, and `final` at step >= total_steps.
    """
    if step < warmup_steps:
        return base * step / warmup_steps
    if step >= total_steps:
        return final
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
