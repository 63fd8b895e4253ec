"""The one training loop, shared by pretraining and refinement.

A method supplies `step_fn(batch) -> (loss, metrics)`; the loop owns the lr schedule, autocast, the optimizer
step, the divergence check, per-epoch seeding, checkpoints and resume. It never syncs with the device inside an
epoch except every `check_every` steps, where it checks that the loss stayed finite. Under torchrun the step runs
inside DistributedDataParallel (gradients averaged over ranks) and only rank 0 saves checkpoints and sees the
per-step and per-epoch callbacks, with the epoch's numbers averaged over ranks.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from pipeline import distributed
from pipeline.errors import DivergenceError
from pipeline.train.checkpoint import Checkpointer, load_module_state

log = logging.getLogger(__name__)

StepFn = Callable[[Any], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class FitResult:
    """What a finished run reports: per-epoch history and the totals."""

    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    resumed_from_epoch: int = 0


class _Step(nn.Module):
    """The step as a module, so DistributedDataParallel sees the forward that uses the model's parameters."""

    def __init__(self, model: nn.Module, step_fn: StepFn):
        super().__init__()
        self.model, self.step_fn = model, step_fn

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.step_fn(batch)


def _epoch_record(epoch: int, step: int, sums: dict[str, torch.Tensor], n_steps: int, lr: float,
                  images: int, seconds: float) -> dict[str, float]:
    rec = {"epoch": epoch + 1, "step": step, "lr": lr, "images_per_s": images / max(seconds, 1e-9)}
    rec.update({k: float(v) / max(n_steps, 1) for k, v in sums.items()})
    return rec


def fit(model: nn.Module, step_fn: StepFn, batches: Callable[[int], Iterable[Any]], optimizer: torch.optim.Optimizer,
        lr_at: Callable[[int], float], epochs: int, seed: int, checkpointer: Checkpointer | None = None,
        checkpoint_every: int = 1, autocast: Callable[[], Any] | None = None, check_every: int = 50,
        on_step: Callable[[int], None] | None = None, on_epoch: Callable[[dict[str, float]], None] | None = None,
        extra_state: dict[str, nn.Module] | None = None, after_step: Callable[[], None] | None = None,
        epoch_offset: int = 0) -> FitResult:
    """Train `model` for `epochs`, resuming from `checkpointer` if it holds this run's state.

    Args:
        model: the module whose parameters `optimizer` updates (saved and restored on resume).
        step_fn: batch -> (scalar loss, dict of scalar metric tensors); runs under `autocast`.
        batches: epoch -> iterable of batches; must depend only on (seed, epoch) for exact resume.
        optimizer: its groups may carry "lr_scale" (layer-wise decay); lr = lr_at(step) * lr_scale.
        lr_at: global step -> learning rate.
        epochs: total epochs.
        seed: torch is reseeded with (seed, epoch) at every epoch start, so masks and crops replay on resume.
        checkpointer: where to save every `checkpoint_every` epochs and at the end; None = no checkpoints.
        autocast: a factory of the autocast context (bf16 on GPU).
        check_every: steps between finiteness checks (each one syncs with the device).
        on_step: called with the number of images of each step (progress bars).
        on_epoch: called with each epoch's record (DVCLive).
        extra_state: further modules (queue, EMA) saved and restored with the model.
        after_step: called after every optimizer step (the EMA update).
        epoch_offset: epochs of the same seed that earlier runs already drew (refinement's heads phase): epoch e
            reads batches(epoch_offset + e) and seeds torch with it, so a second phase does not replay the first.
    Returns:
        FitResult with one record per epoch.
    Raises:
        DivergenceError: the loss became non-finite; names the step and the last good checkpoint.
    """
    extra_state = extra_state or {}
    result, start_epoch, step = _resume(checkpointer, model, optimizer, extra_state)
    last_good = f"{checkpointer.path} (epoch {start_epoch})" if result.resumed_from_epoch else "none"
    main = distributed.world().main
    step_module = distributed.ddp(_Step(model, step_fn))
    for epoch in range(start_epoch, epochs):
        torch.manual_seed(seed * 100_003 + epoch_offset + epoch)
        model.train()
        t0 = time.perf_counter()
        sums, n_steps, images, step = _run_epoch(step_module, batches(epoch_offset + epoch), optimizer, lr_at, step,
                                                 autocast, after_step, on_step if main else None, check_every,
                                                 last_good)
        seconds = time.perf_counter() - t0
        record = _epoch_record(epoch, step, sums, n_steps, lr_at(max(step - 1, 0)), images, seconds)
        record = distributed.mean_over_ranks(record) | {"epoch": epoch + 1, "step": step}
        record["images_per_s"] *= distributed.world().size  # all ranks together
        result.history.append(record)
        if on_epoch and main:
            on_epoch(record)
        if checkpointer and main and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
            checkpointer.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                               "step": step, "history": result.history,
                               "extra": {k: m.state_dict() for k, m in extra_state.items()}})
            last_good = f"{checkpointer.path} (epoch {epoch + 1})"
    result.steps = step
    return result


def _resume(checkpointer: Checkpointer | None, model: nn.Module, optimizer: torch.optim.Optimizer,
            extra_state: dict[str, nn.Module]) -> tuple[FitResult, int, int]:
    """(the result so far, the epoch and the global step to start from): this run's saved state, if any, loaded."""
    result = FitResult()
    saved = checkpointer.load() if checkpointer else None
    if saved is None:
        return result, 0, 0
    load_module_state(model, saved["model"], str(checkpointer.path))
    optimizer.load_state_dict(saved["optimizer"])
    for name, module in extra_state.items():
        load_module_state(module, saved["extra"][name], f"{checkpointer.path}:{name}")
    result.history, result.resumed_from_epoch = list(saved["history"]), saved["epoch"]
    log.info("resumed from %s at epoch %d (step %d)", checkpointer.path, saved["epoch"], saved["step"])
    return result, saved["epoch"], saved["step"]


def _run_epoch(step_module: nn.Module, batches: Iterable[Any], optimizer: torch.optim.Optimizer,
               lr_at: Callable[[int], float], step: int, autocast: Callable[[], Any] | None,
               after_step: Callable[[], None] | None, on_step: Callable[[int], None] | None, check_every: int,
               last_good: str) -> tuple[dict[str, torch.Tensor], int, int, int]:
    """One epoch of optimizer steps: (summed metrics, steps, images, the global step after it)."""
    sums: dict[str, torch.Tensor] = {}
    bad_step = None
    n_steps = images = 0
    for batch in batches:
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        with autocast() if autocast else torch.autocast("cpu", enabled=False):
            loss, metrics = step_module(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step:
            after_step()
        if bad_step is None:
            bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        # first non-finite step, kept on the device: no host sync per step
        newly_bad = ~torch.isfinite(loss.detach()) & (bad_step < 0)
        bad_step = torch.where(newly_bad, torch.full_like(bad_step, step), bad_step)
        for k, v in {"loss": loss.detach(), **metrics}.items():
            sums[k] = sums[k] + v.detach().float() if k in sums else v.detach().float()
        step += 1
        n_steps += 1
        n_img = len(batch[-1]) if isinstance(batch, (tuple, list)) else len(batch)  # tuples end per sample
        images += n_img
        if on_step:
            on_step(n_img)
        if step % check_every == 0 or n_steps == 1:
            _raise_if_diverged(bad_step, last_good)
    _raise_if_diverged(bad_step, last_good)
    return sums, n_steps, images, step


def _raise_if_diverged(bad_step: torch.Tensor | None, last_good: str) -> None:
    if bad_step is not None and int(bad_step) >= 0:
        raise DivergenceError(f"non-finite loss at step {int(bad_step)}; last good checkpoint: {last_good}")
