"""Fourier analysis of token maps against signals whose spectrum is known."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.analysis.frequency import diagonal_amplitude, diagonal_frequencies, relative_log_amplitude


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


def test_diagonal_amplitude__constant_map_has_all_amplitude_at_frequency_zero():
    tokens = torch.full((2, 49, 3), -2.5)  # a 7 x 7 map of -2.5 in every channel
    amp = diagonal_amplitude(tokens, (7, 7))
    torch.testing.assert_close(amp, torch.tensor([2.5, 0.0, 0.0, 0.0]))


def test_diagonal_amplitude__checkerboard_has_all_amplitude_at_the_highest_frequency():
    ys, xs = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    board = (-1.0) ** (xs + ys) * 0.5  # ±0.5: (-1)^(x+y) = cos(π x + π y), frequency (π, π)
    amp = diagonal_amplitude(board.flatten()[None, :, None].expand(1, 64, 2), (8, 8))
    torch.testing.assert_close(amp, torch.tensor([0.0, 0.0, 0.0, 0.0, 0.5]))


def test_diagonal_amplitude__is_absolute_where_the_relative_curve_is_not():
    # doubling a map doubles its linear amplitude and leaves the Δ log amplitude (relative to frequency 0) unchanged
    tokens = diagonal_wave(8, 2) + 1.0
    torch.testing.assert_close(diagonal_amplitude(2 * tokens, (8, 8)), 2 * diagonal_amplitude(tokens, (8, 8)))
    # (at the wave's frequency; where the amplitude is 0 the curve reads the log's 1e-6 floor)
    assert relative_log_amplitude(2 * tokens, (8, 8))[2].item() == pytest.approx(
        relative_log_amplitude(tokens, (8, 8))[2].item(), abs=1e-5)


def test_diagonal_frequencies__exact_labels_for_odd_and_even_grids():
    assert [label for _, label in diagonal_frequencies(7)] == ["0", "2π/7", "4π/7", "6π/7"]
    assert diagonal_frequencies(7)[-1][0] == pytest.approx(6 * math.pi / 7)
    assert [label for _, label in diagonal_frequencies(8)] == ["0", "π/4", "π/2", "3π/4", "π"]
