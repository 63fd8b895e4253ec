"""Data parallelism on PyTorch's own engine: torchrun processes, DDP gradients, gathered contrastive batches.

A stage started by `torchrun --nproc-per-node N` (or by the stage itself when runtime.nproc > 1) sees the usual
RANK / WORLD_SIZE / LOCAL_RANK variables; `setup` joins the process group (NCCL on CUDA, gloo on CPU). Every rank
takes its slice of each global batch and draws its random numbers (crops, flips, masks) as the slice of one
draw for the whole global batch, so a sample gets the same augmentation whatever the number of processes: a run
on N processes with global batch B matches one process with batch B up to float reduction order (tested).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class World:
    """This process's place: rank among world processes (1 = not distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs and writes files."""
        return self.rank == 0


_WORLD = World()


def world() -> World:
    return _WORLD


def launched() -> bool:
    """True inside a process started by torchrun."""
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> World:
    """Join the process group of a torchrun launch (no-op for a single process) and return this rank's place."""
    global _WORLD
    if launched() and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        _WORLD = World(dist.get_rank(), dist.get_world_size())
    return _WORLD


def local_device(device: torch.device) -> torch.device:
    """cuda:LOCAL_RANK for a CUDA run under torchrun, else `device`."""
    if device.type == "cuda" and launched():
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (dim 0 of a batch, dim 1 of an epoch's [steps, B] order)."""
    w = _WORLD
    dim = 1 if batch.ndim == 2 else 0
    n = batch.shape[dim]
    if n % w.size:
        raise ValueError(f"global batch {n} is not divisible by {w.size} processes")
    return batch.narrow(dim, w.rank * (n // w.size), n // w.size)


def rand(b: int, *shape: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """torch.rand for this rank's b rows: its slice of one draw of b * world rows (same per-sample randomness for
    any number of processes). A draw from an explicit `generator` is the caller's own and is not sliced."""
    w = _WORLD if generator is None else World()
    full = torch.rand(b * w.size, *shape, device=device, generator=generator)
    return full[w.rank * b:(w.rank + 1) * b]


def randint(high: int, b: int, *shape: int, device: torch.device,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """torch.randint for this rank's b rows, drawn like `rand`."""
    w = _WORLD if generator is None else World()
    full = torch.randint(high, (b * w.size, *shape), device=device, generator=generator)
    return full[w.rank * b:(w.rank + 1) * b]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums each rank's gradient of the gathered tensor and returns this rank's part."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n:(dist.get_rank() + 1) * n]


class _SumWithGrad(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: every rank's output depends on every rank's input."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def gather(x: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """The global batch: every rank's rows of `x` in rank order (x itself for one process).

    With grad=True, gradients of the gathered rows flow back to the rank that owns them (NNA's predictions);
    otherwise the result is detached (queue entries, keys, indices, labels).
    """
    if _WORLD.size == 1:
        return x if grad else x.detach()
    if grad:
        return _GatherWithGrad.apply(x)
    parts = [torch.empty_like(x) for _ in range(_WORLD.size)]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average per-rank numbers (an epoch's loss and metrics) so rank 0 logs the global-batch figure."""
    if _WORLD.size == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return {k: float(v) / _WORLD.size for k, v in zip(keys, t.tolist())}


class SyncBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics cover the global batch of all ranks.

    torch's nn.SyncBatchNorm runs on GPUs only; this one syncs the per-feature sum, sum of squares and count
    through differentiable all-reduces, so it runs under gloo on CPU as well as under NCCL, and equals plain
    BatchNorm1d on the concatenated batch (forward and backward).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _WORLD.size > 1):
            return super().forward(x)
        dtype, x = x.dtype, x.float()  # statistics in fp32 under autocast, as torch's BatchNorm
        local = torch.cat([x.sum(0), (x * x).sum(0), x.new_full((1,), x.shape[0])])
        total = _SumWithGrad.apply(local)
        d = x.shape[1]
        count = total[-1]
        mean = total[:d] / count
        var = total[d:2 * d] / count - mean * mean
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * count / (count - 1), alpha=m)
            self.num_batches_tracked.add_(1)
        out = (x - mean) / torch.sqrt(var + self.eps)
        return (out * self.weight + self.bias if self.affine else out).to(dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d of `module` by SyncBatchNorm1d in place, keeping its weights and statistics."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm1d:
            sync = SyncBatchNorm1d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats).to(child.weight.device if child.affine else None)
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child)
    return module


def ddp(module: nn.Module) -> nn.Module:
    """`module` wrapped in DistributedDataParallel when there are several processes (itself otherwise).

    Buffers are not broadcast: queues are kept identical by gathering, BatchNorm statistics are synced.
    """
    if _WORLD.size == 1:
        return module
    return nn.parallel.DistributedDataParallel(module, forward_sync_buffers=False)

