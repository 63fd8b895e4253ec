"""Fourier analysis of token features (Park & Kim, "How do vision transformers work?", ICLR 2022).

MFF (arXiv 2308.00261) reports that fusing shallow blocks lowers the high-frequency amplitude of the latent
features; reference/mae_mff.md B.6 gives the recipe followed here.
"""
from __future__ import annotations

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


@torch.no_grad()
def block_spectra(encoder: ViTEncoder, data: DeviceImages, batch_size: int) -> list[torch.Tensor]:
    """Δ log amplitude per block, averaged over all images of `data` (patch tokens, raw block outputs)."""
    encoder.eval()
    grid = int(encoder.num_patches ** 0.5)
    sums: list[torch.Tensor] = []
    for images, _ in data.batches(batch_size):
        tokens = encoder.forward_intermediates(images, list(range(encoder.depth)), norm=False)
        curves = [relative_log_amplitude(t[:, 1:], (grid, grid)) * images.shape[0] for t in tokens]
        sums = curves if not sums else [s + c for s, c in zip(sums, curves)]
    return [s / len(data) for s in sums]
