"""Projector and predictor heads of NNA refinement (ml-jku/MIM-Refiner src/models/ssl/nnclr_head.py), and
Contrastive Clustering's cluster head (Yunfan-Li/Contrastive-Clustering modules/network.py).

"Projector: Linear(d_in→2048, no bias) → BN → GELU → Linear(2048→2048, no bias) → BN → GELU →
Linear(2048→256, no bias) → BN(256)"; "Predictor: Linear(256→4096) → BN → GELU → Linear(4096→256) → BN(256)".
Widths are arguments so small datasets can scale them down.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear (no bias) + BatchNorm between every pair of widths, GELU after all but the last."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers += [nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out)]
        if i < len(dims) - 2:
            layers.append(nn.GELU())
    for m in layers:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
    return nn.Sequential(*layers)


# Contrastive Clustering's instance head (Yunfan-Li/Contrastive-Clustering modules/network.py): Linear(d, d),
# ReLU, Linear(d, 128), with biases and no BatchNorm; its instance temperature is 0.5
CC_INSTANCE_DIM = 128
CC_INSTANCE_TEMPERATURE = 0.5


def cc_instance_projector(dim: int, out: int = CC_INSTANCE_DIM) -> nn.Sequential:
    """Contrastive Clustering's instance projector: Linear(dim, dim) -> ReLU -> Linear(dim, out)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out))


class IDHead(nn.Module):
    """One instance-discrimination head: projector (3 layers) and predictor (2 layers).

    Args:
        dim: input width (the encoder's D).
        hidden: projector hidden width.
        out: embedding width.
        pred_hidden: predictor hidden width; 0 = no predictor (p is z), for objectives that use none (cc).
        projector: a projector to use instead of the 3-layer BatchNorm MLP (CC's instance head).
    """

    def __init__(self, dim: int, hidden: int, out: int, pred_hidden: int, projector: nn.Module | None = None):
        super().__init__()
        self.projector = projector if projector is not None else mlp([dim, hidden, hidden, out])
        self.predictor = mlp([out, pred_hidden, out]) if pred_hidden else nn.Identity()

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, D] pooled features -> (z [N, out] projections, p [N, out] predictions)."""
        z = self.projector(features)
        return z, self.predictor(z)


class ClusterHead(nn.Module):
    """Contrastive Clustering's cluster head: "Linear(d, d) -> ReLU -> Linear(d, M) -> softmax over the M clusters",
    no BatchNorm (Yunfan-Li/Contrastive-Clustering modules/network.py).

    Args:
        dim: input width (the encoder's D); also the hidden width, as in the paper.
        clusters: M, the number of clusters.
    """

    def __init__(self, dim: int, clusters: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, clusters))

    @property
    def clusters(self) -> int:
        return self.mlp[-1].out_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[N, D] pooled features -> [N, M] cluster probabilities (softmax in fp32 under any autocast)."""
        return torch.softmax(self.mlp(features).float(), dim=1)

