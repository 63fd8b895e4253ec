"""Throughput of the streaming ImageFolder path (pipeline/data/stream.py) against a ViT-B/16 MAE training step.

Measures images/s of
  (a) the loader alone: JPEG decode + MAE crops in DataLoader workers, pinned copy to the device;
  (b) the MAE ViT-B/16 step alone (forward, backward, AdamW) on a batch already on the device;
  (c) both together, as `pretrain` runs with data.stream;
  (d) evaluate's full train split (evaluate.train_split: full; pipeline/data/folder_split.py): decoding batches
      with Resize 256/224 x size and CenterCrop, by one thread and by --workers threads.
The ratio (a)/(b) says whether the workers keep up with the model (> 1) or starve it (< 1); the ratio of the two
rows (d) says how far the evaluation's decoding threads scale.

    python benchmarks/imagefolder_throughput.py --root /data/imagenet --size 224 --batch-size 256 --workers 10
    python benchmarks/imagefolder_throughput.py --device cpu --size 64 --batch-size 8 --workers 2 --steps 4

Without --root it writes a synthetic ImageFolder of smooth random JPEGs (ImageNet-like 500x375, ~100 kB) to a
temporary folder. Files read twice sit in the page cache, so (a) measures decoding and augmentation, not disk.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from pipeline.data.stream import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SeededImages,
    device_batches,
    mae_transform,
    open_train_folder,
    stream_loader,
)
from pipeline.data.folder_split import FolderSplit
from pipeline.models.mae import MaskedAutoencoder
from pipeline.models.vit import ViTEncoder
from pipeline.train import device as rt
from pipeline.train.mae_step import loader_images, mae_step_fn
from pipeline.train.optim import adamw, param_groups


def write_synthetic_folder(root: Path, images: int, classes: int = 10, size: tuple[int, int] = (500, 375)) -> Path:
    """root/train/<class>/<n>.jpg: smooth random content (bicubic upsampling of a coarse grid plus mild noise),
    which compresses like photographs rather than like white noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    for i in range(images):
        folder = root / "train" / f"class{i % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        pixels = np.clip(np.asarray(coarse, np.float32) + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def endless(loader, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of epoch 0, 1, 2, ... on the device."""
    for epoch in itertools.count():
        yield from device_batches(loader, epoch, device)


def timed(step: Callable[[], int], steps: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """Run `step` (returning its image count) warmup + steps times; images/s and ms/step of the last `steps`."""
    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0, n = time.perf_counter(), 0
    for _ in range(steps):
        n += step()
    sync()
    seconds = time.perf_counter() - t0
    return n / seconds, 1000 * seconds / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="an ImageFolder tree with train/<class>/ (default: a synthetic one)")
    parser.add_argument("--images", type=int, default=2048, help="images of the synthetic folder")
    parser.add_argument("--size", type=int, default=224, help="crop size (a multiple of 16)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=8, help="DataLoader worker processes")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (worker start, compile)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the MAE")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)

    device = rt.resolve_device(args.device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else write_synthetic_folder(Path(tmp), args.images)
        folder = open_train_folder(str(root))
        images = SeededImages(folder, np.arange(len(folder)),
                              mae_transform(args.size, 0.2, True, IMAGENET_MEAN, IMAGENET_STD), seed=0)
        loader = stream_loader(images, args.batch_size, args.workers, 0, device)
        mean_kb = np.mean([os.path.getsize(p) for p, _ in folder.samples[:500]]) / 1024

        encoder = ViTEncoder(args.size, 16, 3, 768, 12, 12, 4.0)  # ViT-B/16, MAE's 512 x 8 x 16 decoder
        model = MaskedAutoencoder(encoder, 512, 8, 16, 4.0, [], "softmax").to(device)
        forward = torch.compile(model) if args.compile else model
        optimizer = adamw(param_groups(model, 0.05), (0.9, 0.95), device)
        for group in optimizer.param_groups:
            group["lr"] = 1.0e-4
        step_fn = mae_step_fn(model, forward, loader_images, 0.75, True, 0.2, True)

        def train(batch: tuple[torch.Tensor, torch.Tensor]) -> int:
            with rt.autocast(device, args.precision):
                loss, _ = step_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return len(batch[0])

        stream = endless(loader, device)
        resident = (torch.randn(args.batch_size, 3, args.size, args.size, device=device),
                    torch.zeros(args.batch_size, dtype=torch.long, device=device))
        rows = {
            "loader only (decode + crops in workers, pinned copy)": timed(lambda: len(next(stream)[0]), args.steps,
                                                                          args.warmup, device),
            "MAE ViT-B/16 step on a resident batch": timed(lambda: train(resident), args.steps, args.warmup, device),
            "loader + MAE ViT-B/16 step": timed(lambda: train(next(stream)), args.steps, args.warmup, device),
        }
        stream.close()  # stops the workers before the synthetic folder goes
        files, labels = [Path(p) for p, _ in folder.samples], np.asarray(folder.targets, np.int64)
        for threads in (1, args.workers):
            split = FolderSplit(files, labels, args.size, round(args.size * 256 / 224), list(IMAGENET_MEAN),
                                list(IMAGENET_STD), device, threads)
            batches = itertools.cycle(torch.arange(len(split)).split(args.batch_size))
            rows[f"full-split evaluation decode, {threads} thread(s)"] = timed(
                lambda: len(split.rows(next(batches))), args.steps, args.warmup, device)
            split.pool.shutdown()

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{len(folder)} JPEGs ({'synthetic' if not args.root else root}, {mean_kb:.0f} kB mean), {args.size} px, "
          f"batch {args.batch_size}, {args.workers} workers on {os.cpu_count()} cores, device {name}, "
          f"precision {args.precision}{', compiled' if args.compile else ''}")
    print("| path | images/s | ms/step |\n|---|---|---|")
    for label, (ips, ms) in rows.items():
        print(f"| {label} | {ips:.1f} | {ms:.1f} |")
    loader_ips, step_ips, both_ips, one_thread, threads = (ips for ips, _ in rows.values())
    print(f"loader / step ratio {loader_ips / step_ips:.2f} (> 1: the workers keep up with the model); "
          f"loader + step reaches {100 * both_ips / step_ips:.0f}% of the resident-batch step; "
          f"full-split decode: {args.workers} threads / 1 thread = {threads / one_thread:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "device": name,
                                         "images_per_s": {k: v[0] for k, v in rows.items()},
                                         "ms_per_step": {k: v[1] for k, v in rows.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
