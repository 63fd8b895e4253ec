"""Resolve the runtime params (device, precision, compile, threads) into concrete choices."""
from __future__ import annotations

import contextlib
import os

import torch

from pipeline import distributed
from pipeline.errors import ConfigError


def resolve_device(choice: str) -> torch.device:
    """auto -> cuda when available, else cpu."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("params: runtime.device = 'cuda' but no CUDA device is visible")
    return torch.device(choice)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on cuda for precision auto|bf16, bf16 on cpu only if asked; otherwise a no-op."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)


def use_compile(device: torch.device, choice: str) -> bool:
    """auto -> compile on cuda only (CPU compile costs more than it saves on small runs)."""
    return choice == "on" or (choice == "auto" and device.type == "cuda")


def set_threads(threads: int) -> None:
    """Pin torch's CPU threads, so Snakemake (which exports OMP_NUM_THREADS) and DVC behave alike."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    """Seed torch's CPU and CUDA generators and ask for deterministic kernels where they exist."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def setup_runtime(runtime: dict, seed: int) -> torch.device:
    """Apply the params `runtime` section at a stage's start: CPU threads, seeds, the device to use, and (under
    torchrun) the process group, with this rank's GPU."""
    set_threads(runtime["threads"])
    seed_everything(seed)
    device = distributed.local_device(resolve_device(runtime["device"]))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    distributed.setup(device)
    return device
