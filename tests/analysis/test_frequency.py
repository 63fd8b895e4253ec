"""Fourier analysis of token maps against signals whose spectrum is known."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.analysis.frequency import relative_log_amplitude


def diagonal_wave(n: int, k: int, channels: int = 3) -> torch.Tensor:
    """Tokens [1, n*n, D] holding cos(2π k (x + y) / n) in every channel: all energy at frequency (k, k)."""
    ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    wave = torch.cos(2 * math.pi * k * (xs + ys) / n).flatten()
    return wave[None, :, None].expand(1, n * n, channels)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_relative_log_amplitude__pure_sinusoid_peaks_at_its_frequency(k):
    curve = relative_log_amplitude(diagonal_wave(8, k), (8, 8))
    assert curve.shape == (5,)
    assert int(curve.argmax()) == k


def test_relative_log_amplitude__constant_map_has_no_high_frequency():
    curve = relative_log_amplitude(torch.ones(2, 16, 4), (4, 4))
    assert curve[0] == 0 and torch.all(curve[1:] < -10)


def test_relative_log_amplitude__grid_mismatch():
    with pytest.raises(ValueError, match="do not form a 4x4 grid"):
        relative_log_amplitude(torch.ones(1, 15, 2), (4, 4))
