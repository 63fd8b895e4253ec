"""Schedules at their endpoints."""
from __future__ import annotations

import pytest

from pipeline.train.schedules import warmup_cosine


def test_warmup_cosine__endpoints_and_midpoint():
    assert warmup_cosine(0, 100, 10, 1.0, 0.1) == 0.0
    assert warmup_cosine(5, 100, 10, 1.0, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(10, 100, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 1.0, 0.1) == pytest.approx(0.55)
    assert warmup_cosine(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)


def test_warmup_cosine__no_warmup_starts_at_base():
    assert warmup_cosine(0, 10, 0, 2.0, 0.0) == pytest.approx(2.0)
