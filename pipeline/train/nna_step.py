"""NNA refinement (MIM-Refiner): ID heads on the last kept blocks, trained with the NNA loss and NN queues."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from pipeline.data.augment import random_resized_crop
from pipeline.data.loader import DeviceImages
from pipeline.models.heads import IDHead
from pipeline.models.vit import ViTEncoder
from pipeline.objectives.nna import nna_loss, positive_mass
from pipeline.train.queue import NNQueue


def head_blocks(depth: int, count: int) -> list[int]:
    """The 0-based blocks that get a head: the last `count` of `depth`, or the last third (at least 1) for 0."""
    count = count or max(1, round(depth / 3))
    if count > depth:
        raise ValueError(f"{count} heads asked for an encoder of {depth} blocks")
    return list(range(depth - count, depth))


class Refiner(nn.Module):
    """A (truncated) encoder with one ID head and one NN queue per head block.

    Args:
        encoder: the encoder, already cut to the refinement depth.
        blocks: 0-based blocks with a head; the last block's CLS goes through the final norm, the others are raw
            (MIM-Refiner's "main" and "clsK" heads).
        hidden, out, pred_hidden: head widths.
        queue_size, topk: queue length and the neighbour draw (1 = nearest).
    """

    def __init__(self, encoder: ViTEncoder, blocks: list[int], hidden: int, out: int, pred_hidden: int,
                 queue_size: int, topk: int):
        super().__init__()
        self.encoder, self.blocks = encoder, list(blocks)
        self.heads = nn.ModuleList(IDHead(encoder.embed_dim, hidden, out, pred_hidden) for _ in self.blocks)
        self.queues = nn.ModuleList(NNQueue(queue_size, out, topk) for _ in self.blocks)

    def pooled(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[N, C, H, W] -> one [N, D] CLS feature per head block."""
        enc = self.encoder
        _, kept = enc.run_blocks(enc.prepend_cls(enc.embed_patches(images)), self.blocks)
        feats = [t[:, 0] for t in kept]
        if self.blocks[-1] == enc.depth - 1:
            feats[-1] = enc.norm(kept[-1])[:, 0]
        return feats


def nna_step_fn(refiner: Refiner, data: DeviceImages, temperature: float, global_scale_min: float,
                local_crops: int, local_scale: tuple[float, float]
                ) -> Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """step_fn(indices) -> (sum over heads of the mean NNA term, metrics of the last head).

    Terms per head: the two global views as anchors against each other's predictions (symmetric), plus each
    global anchor against each local view's prediction. Queries happen before the push of global view 0.
    Local crops are taken at small scale and resized to the full input size (one token grid for all views).
    """
    def step(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = data.labels[idx]
        with torch.no_grad():
            x = data.batch(idx)
            views = [random_resized_crop(x, (global_scale_min, 1.0)) for _ in range(2)]
            views += [random_resized_crop(x, local_scale) for _ in range(local_crops)]
        b, v = x.shape[0], len(views)
        total = torch.zeros((), device=x.device)
        metrics: dict[str, torch.Tensor] = {}
        for feats, head, queue in zip(refiner.pooled(torch.cat(views)), refiner.heads, refiner.queues):
            z, p = head(feats)  # BatchNorm sees all views together, as in the official code
            z, p = z.view(v, b, -1), p.view(v, b, -1)
            q0, nn_label, nn_sim = queue.query(z[0], idx)
            q1, _, _ = queue.query(z[1], idx)
            anchors = ((z[0], q0), (z[1], q1))
            terms = [nna_loss(z[0], q0, p[1], temperature), nna_loss(z[1], q1, p[0], temperature)]
            terms += [nna_loss(za, qa, p[2 + i], temperature) for za, qa in anchors for i in range(local_crops)]
            total = total + torch.stack(terms).mean()
            queue.push(z[0].detach(), idx, labels)
            metrics = {"alignment": positive_mass(z[0], q0, p[1], temperature),
                       "nn_accuracy": (nn_label == labels).float().mean(), "nn_similarity": nn_sim.mean()}
        return total, metrics

    return step
