"""MIM-Refiner's training: the phases of pipeline/models/refiner.py, each run by the one training loop
(train/loop.py) with its own AdamW (layer-wise lr decay on the encoder, the heads at full lr with their own weight
decay), warmup-cosine schedule and resume checkpoint. The EMA of the encoder follows only the phase that trains the
encoder; MoCo's key network follows both."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from pipeline.models.queue import EMA
from pipeline.models.momentum import MomentumKeys
from pipeline.models.refiner import Phase, Refiner
from pipeline.train import device as rt
from pipeline.train.checkpoint import Checkpointer
from pipeline.models.classifier import layer_of
from pipeline.train.loop import fit
from pipeline.train.optim import adamw, layer_decay_groups
from pipeline.train.schedules import warmup_cosine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """The optimization keys of the params refine section that every phase shares."""

    batch_size: int
    warmup_epochs: int
    weight_decay: float
    head_weight_decay: float
    layer_decay: float
    betas: tuple[float, float]
    checkpoint_every: int

    @classmethod
    def from_params(cls, cfg: dict) -> Schedule:
        return cls(cfg["batch_size"], cfg["warmup_epochs"], cfg["weight_decay"], cfg["head_weight_decay"],
                   cfg["layer_decay"], (cfg["beta1"], cfg["beta2"]), cfg["checkpoint_every"])


@dataclass
class Run:
    """What the phases train and where: the refiner, the evaluation EMA, MoCo's keys (or None), the step, the
    batches (epoch -> batches) and their count per epoch, the seed, device and precision, the folder of the resume
    checkpoints and the tag that ties them to this run."""

    refiner: Refiner
    ema: EMA
    keys: MomentumKeys | None
    step_fn: Callable
    batches: Callable[[int], Iterable]
    steps: int
    seed: int
    device: torch.device
    precision: str
    out: Path
    tag: str


def phase_optimizer(refiner: Refiner, schedule: Schedule, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the refiner with layer-wise lr decay; the top layer's decayed weights (the heads') take the heads'
    weight decay."""
    depth = refiner.encoder.depth
    groups = layer_decay_groups(refiner, depth + 1, layer_of(depth), schedule.weight_decay, schedule.layer_decay)
    for g in groups:  # heads (scale 1, the only decayed weights there) use the heads' weight decay
        if g["lr_scale"] == 1.0 and g["weight_decay"] > 0:
            g["weight_decay"] = schedule.head_weight_decay
    return adamw(groups, schedule.betas, device)


def train_phases(run: Run, phases: Iterable[Phase], schedule: Schedule,
                 on_epoch: Callable[[str, dict[str, float]], None]) -> list[dict[str, float]]:
    """Run each phase with epochs (resuming from its checkpoint after a kill); the per-epoch records of all phases,
    each with `phase` 0 (heads) or 1 (encoder too). `on_epoch(phase name, record)` may add to the record."""
    encoder, keys, bs = run.refiner.encoder, run.keys, schedule.batch_size
    history: list[dict[str, float]] = []
    for phase in phases:
        if phase.epochs == 0:
            continue
        encoder.requires_grad_(phase.trains_encoder)
        for queue in run.refiner.queues:
            queue.topk = phase.topk

        def after_step(trains_encoder: bool = phase.trains_encoder) -> None:
            if trains_encoder:  # the evaluation EMA follows the encoder only while it trains
                run.ema.update(encoder)
            if keys:  # the key network follows heads and encoder in both phases
                keys.update(run.refiner)

        lr, warm = phase.blr * bs / 256, min(schedule.warmup_epochs, phase.epochs - 1) * run.steps
        total = phase.epochs * run.steps
        result = fit(run.refiner, run.step_fn, run.batches, phase_optimizer(run.refiner, schedule, run.device),
                     lambda s: warmup_cosine(s, total, warm, lr, 1.0e-6), phase.epochs, run.seed,
                     checkpointer=Checkpointer(run.out / f"resume-{phase.name}.pt", f"{run.tag}-{phase.name}"),
                     checkpoint_every=schedule.checkpoint_every,
                     on_epoch=lambda rec, name=phase.name: on_epoch(name, rec),
                     extra_state={"ema": run.ema, **({"keys": keys} if keys else {})},
                     autocast=lambda: rt.autocast(run.device, run.precision),
                     after_step=after_step if phase.trains_encoder or keys else None,
                     epoch_offset=phase.epoch_offset)
        history += [{"phase": float(phase.trains_encoder), **r} for r in result.history]
    return history
