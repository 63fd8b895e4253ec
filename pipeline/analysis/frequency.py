"""Fourier analysis of token features (Park & Kim, "How do vision transformers work?", ICLR 2022).

MFF (arXiv 2308.00261) reports that fusing shallow blocks lowers the high-frequency amplitude of the latent
features; xxxnell/how-do-vits-work gives the recipe followed here (`relative_log_amplitude`). Its Δ log amplitude
relative to frequency 0 cannot tell "more low-frequency" from "less high-frequency" amplitude, so
`diagonal_amplitude` also gives the plain (linear) amplitude, absolute. Frequencies along the diagonal (k, k) of
an n x n token grid are 2πk/n per axis, k = 0 .. floor(n/2): the highest is π only for even n (6π/7 on 7 x 7).
"""
from __future__ import annotations

import math
from fractions import Fraction

import torch

from pipeline.data.loader import DeviceImages
from pipeline.models.vit import ViTEncoder


def relative_log_amplitude(patch_tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Δ log amplitude of the 2-D Fourier transform of a token map, from frequency 0 to π along the diagonal.

    Args:
        patch_tokens: [B, N, D] features of the patch tokens (no cls), N = h * w in row-major order.
        grid: (h, w) of the token map.
    Returns:
        [min(h, w) // 2 + 1] values: mean over B and D of log(|FFT2| + 1e-6) at frequencies (j, j) * 2π / n for
        j = 0 .. n/2, minus the value at j = 0 (so entry 0 is 0 and the last entry is the amplitude at π).
    """
    b, n, d = patch_tokens.shape
    h, w = grid
    if n != h * w:
        raise ValueError(f"{n} tokens do not form a {h}x{w} grid")
    maps = patch_tokens.float().transpose(1, 2).reshape(b, d, h, w)
    log_amp = torch.log(torch.fft.fft2(maps).abs() + 1e-6).mean(dim=(0, 1))  # [h, w]
    j = torch.arange(min(h, w) // 2 + 1)
    diag = log_amp[j, j]
    return diag - diag[0]


def diagonal_amplitude(patch_tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The linear amplitude of the 2-D Fourier transform of a token map along the diagonal, absolute.

    Args:
        patch_tokens: [B, N, D] features of the patch tokens (no cls), N = h * w in row-major order.
        grid: (h, w) of the token map.
    Returns:
        [min(h, w) // 2 + 1] values: mean over B and D of |FFT2| / (h w) at frequencies (k, k), k = 0 ..: in the
        features' units (a constant map c gives |c| at k = 0 and 0 elsewhere; a ±c checkerboard on an even grid
        gives c at the last k only).
    """
    b, n, d = patch_tokens.shape
    h, w = grid
    if n != h * w:
        raise ValueError(f"{n} tokens do not form a {h}x{w} grid")
    maps = patch_tokens.float().transpose(1, 2).reshape(b, d, h, w)
    amp = torch.fft.fft2(maps, norm="forward").abs().mean(dim=(0, 1))  # [h, w]
    k = torch.arange(min(h, w) // 2 + 1)
    return amp[k, k]


def diagonal_frequencies(n: int) -> list[tuple[float, str]]:
    """(2πk/n in radians, its exact label) for k = 0 .. floor(n/2): the frequencies of the diagonal entries of an
    n x n grid, e.g. n = 7 -> 0, 2π/7, 4π/7, 6π/7."""
    out = []
    for k in range(n // 2 + 1):
        r = Fraction(2 * k, n)  # the frequency in units of π
        label = "0" if r == 0 else f"{'' if r.numerator == 1 else r.numerator}π" + (
            "" if r.denominator == 1 else f"/{r.denominator}")
        out.append((2 * math.pi * k / n, label))
    return out


@torch.no_grad()
def block_spectra(encoder: ViTEncoder, data: DeviceImages, batch_size: int
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per block, averaged over all images of `data` (patch tokens, raw block outputs): the Δ log amplitude
    (`relative_log_amplitude`) and the linear amplitude (`diagonal_amplitude`)."""
    encoder.eval()
    grid = int(encoder.num_patches ** 0.5)
    sums: list[torch.Tensor] = []
    for images, _ in data.batches(batch_size):
        patches = encoder.forward_intermediates(images, norm=False, output_fmt="NLC", intermediates_only=True)
        curves = [fn(t, (grid, grid)) * images.shape[0] for fn in (relative_log_amplitude, diagonal_amplitude)
                  for t in patches]
        sums = curves if not sums else [s + c for s, c in zip(sums, curves)]
    means = [s / len(data) for s in sums]
    return means[:len(means) // 2], means[len(means) // 2:]


def frequency_table(spectra: list[torch.Tensor], amplitudes: list[torch.Tensor], freqs: list[tuple[float, str]]
                    ) -> tuple[str, dict]:
    """The analyze stage's outputs of `block_spectra` at `diagonal_frequencies`: frequency.csv's text (block,
    relative depth, frequency in units of π and its label, Δ log amplitude, linear amplitude) and frequency.json's
    spectra (high_frequency: the Δ log amplitude at the highest frequency per block; the last block's linear
    amplitude spectrum; the frequencies)."""
    depth = len(spectra)
    lines = ["block,relative_depth,frequency,frequency_label,dlog_amplitude,amplitude"]
    for b, (curve, amp) in enumerate(zip(spectra, amplitudes)):
        lines += [f"{b},{(b + 1) / depth:.6g},{rad / math.pi:.6g},{label},{float(v):.6g},{float(a):.6g}"
                  for (rad, label), v, a in zip(freqs, curve, amp)]
    return "\n".join(lines) + "\n", {
        "high_frequency": [round(float(c[-1]), 6) for c in spectra],
        "frequency_labels": [label for _, label in freqs], "frequencies_rad": [round(r, 6) for r, _ in freqs],
        "last_block_amplitude": [round(float(a), 6) for a in amplitudes[-1]]}
