"""The GPU acceptance check (issue 20): training throughput, memory, the probe's cost and a short GPU-profile chain.

    python benchmarks/gpu_check.py                       # one GPU: about 6 minutes on an H200 -> benchmarks/results/
    python benchmarks/gpu_check.py --smoke --out /tmp/x  # tiny sizes on the CPU in about a minute: same code paths

Sections (a failing one records its error and the others still run; the files are rewritten after each):
  mae_vit_b16      MAE ViT-B/16, 224 px, mask 0.75, batch 256: images/s and peak memory of eager fp32, bf16 autocast,
                   and bf16 + torch.compile + fused AdamW, with ratios to eager fp32
  gpu_profile_mae  the GPU profile's encoder (profiles/gpu/params.yaml: ViT-T/4 on 28 px) pretraining at batch 2048
  gpu_profile_nna  its NNA refinement step (pipeline/models/refiner.py) at the profile's refine batch
  probe            the per-block k-NN probe over train/val-sized images against one plain forward pass over them
  chain            prepare -> pretrain -> probe -> refine -> evaluate of the GPU profile, shortened (gpu_chain.py)
Training is timed through the pipeline's loop (pipeline/train/loop.py::fit) with the pipeline's model, step and
optimizer, on images held on the device as the stages hold them; warm-up steps (compilation, autotuning) run in an
untimed first call, and the clock starts and stops on a synchronized device. Writes <out>/gpu_check.{json,md}
(--smoke: gpu_check_smoke.*, marked as such: its numbers are not measurements).
"""
from __future__ import annotations

import argparse
import gc
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from benchmarks.gpu_chain import make_workspace, run_chain  # noqa: E402
from benchmarks.gpu_report import markdown  # noqa: E402
from pipeline.atomic import write_json, write_text  # noqa: E402
from pipeline.data.loader import DeviceImages, epoch_order  # noqa: E402
from pipeline.eval.features import pooled_features  # noqa: E402
from pipeline.eval.knn import knn_protocol  # noqa: E402
from pipeline.eval.probe import probe_encoder  # noqa: E402
from pipeline.models.classifier import layer_of  # noqa: E402
from pipeline.models.mae import MaskedAutoencoder  # noqa: E402
from pipeline.models.vit import ViTEncoder  # noqa: E402
from pipeline.train import device as rt  # noqa: E402
from pipeline.train.loop import fit  # noqa: E402
from pipeline.train.mae_step import mae_step_fn  # noqa: E402
from pipeline.train.optim import adamw, fused_supported, layer_decay_groups, param_groups  # noqa: E402
from pipeline.data.views import device_views  # noqa: E402
from pipeline.models.queue import EMA  # noqa: E402
from pipeline.models.refiner import Loss, Refiner, head_blocks, refine_step_fn  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# MAE ViT-B/16 (facebookresearch/mae models_mae.py): encoder 768 x 12 x 12 heads, decoder 512 x 8 x 16 heads
VIT_B16 = {"img": 224, "patch": 16, "chans": 3, "dim": 768, "depth": 12, "heads": 12, "dec": (512, 8, 16)}
# name -> (precision, torch.compile, fused AdamW); the last is what the pipeline runs on a GPU
MAE_MODES = {"eager_fp32": ("fp32", False, False), "bf16": ("bf16", False, False),
             "bf16_compile_fused": ("bf16", True, True)}
SECTIONS = ("mae_vit_b16", "gpu_profile_mae", "gpu_profile_nna", "probe", "chain")


def sizes(smoke: bool) -> dict:
    """Batch sizes, step counts and image counts of a full run, or the smoke run's tiny ones."""
    if smoke:
        return {"smoke": True,
                "vit_b": {**VIT_B16, "img": 32, "patch": 8, "dim": 64, "depth": 2, "heads": 2, "dec": (32, 1, 2)},
                "mae_batch": 8, "tiny_batch": 64, "nna_batch": 64, "warmup": 1, "steps": 2, "bank": 512,
                "val": 256, "compile_backend": "aot_eager"}
    # nna_batch None: the profile's refine.batch_size; bank + val: Fashion-MNIST's 60,000 train images less val_size
    return {"smoke": False, "vit_b": VIT_B16, "mae_batch": 256, "tiny_batch": 2048, "nna_batch": None, "warmup": 3,
            "steps": 20, "bank": 50000, "val": 10000, "compile_backend": "inductor"}


def profile_params() -> dict:
    """params.yaml with profiles/gpu/params.yaml laid over it, as `pipeline.config switch` merges (a `variants`
    table is replaced whole). Read with plain yaml: pipeline.config needs jsonschema, absent on a bare GPU box."""
    def merge(dst: dict, src: dict) -> dict:
        for key, value in src.items():
            both = isinstance(value, dict) and isinstance(dst.get(key), dict) and key != "variants"
            dst[key] = merge(dst[key], value) if both else value
        return dst

    return merge(yaml.safe_load((REPO / "params.yaml").read_text()),
                 yaml.safe_load((REPO / "profiles" / "gpu" / "params.yaml").read_text()))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_images(n: int, side: int, chans: int, device: torch.device, mean: list[float], std: list[float]
                  ) -> DeviceImages:
    """n random uint8 images on the device with random labels (throughput does not depend on the content)."""
    rng = np.random.default_rng(0)
    return DeviceImages(rng.integers(0, 256, (n, side, side, chans), dtype=np.uint8),
                        rng.integers(0, 10, n).astype(np.int64), mean, std, device)


def train_rate(model: torch.nn.Module, step_fn: Callable, optimizer: torch.optim.Optimizer, n_images: int,
               batch: int, warmup: int, steps: int, precision: str, device: torch.device,
               after_step: Callable[[], None] | None = None) -> dict:
    """Images/s of `fit` over `steps` steps after an untimed call of `warmup` steps, and the timed call's peak
    device memory. Batches are index rows of a pool of `n_images` on the device (`epoch_order`), reused in turn."""
    def run(count: int) -> None:
        def batches(epoch: int) -> list[torch.Tensor]:
            rows = epoch_order(n_images, batch, 0, epoch, device)
            return [rows[i % len(rows)] for i in range(count)]

        fit(model, step_fn, batches, optimizer, lambda s: 1.0e-4, 1, seed=0, after_step=after_step,
            autocast=lambda: rt.autocast(device, precision))

    run(warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    run(steps)
    sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"images_per_s": round(steps * batch / seconds, 1), "ms_per_step": round(1000 * seconds / steps, 2),
            "peak_memory_gib": None if peak is None else round(peak, 3), "batch": batch, "timed_steps": steps}


def release(device: torch.device) -> None:
    """Drop compiled graphs and cached blocks between measurements, so each starts from the same state."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def mae_rate(arch: dict, batch: int, mask_ratio: float, norm_pix: bool, mode: tuple[str, bool, bool], n: dict,
             device: torch.device) -> dict:
    """`train_rate` of the pipeline's MAE (pretrain's model, step and crops on the device) in one mode
    (precision, torch.compile, fused AdamW)."""
    precision, compiled, fused = mode
    torch.manual_seed(0)
    encoder = ViTEncoder(arch["img"], arch["patch"], arch["chans"], arch["dim"], arch["depth"], arch["heads"])
    model = MaskedAutoencoder(encoder, *arch["dec"]).to(device)
    # the smoke run traces with dynamo and AOTAutograd but skips inductor's code generation (minutes on a CPU)
    forward = torch.compile(model, backend=n["compile_backend"]) if compiled else model
    optimizer = adamw(param_groups(model, 0.05), (0.9, 0.95), device) if fused else \
        torch.optim.AdamW(param_groups(model, 0.05), lr=0.0, betas=(0.9, 0.95), fused=False)
    mean, std = IMAGENET if arch["chans"] == 3 else ([0.5], [0.25])
    data = random_images(2 * batch, arch["img"], arch["chans"], device, mean[:arch["chans"]], std[:arch["chans"]])
    step_fn = mae_step_fn(model, forward, data, mask_ratio, norm_pix, 0.2, True)
    try:
        return train_rate(model, step_fn, optimizer, len(data), batch, n["warmup"], n["steps"], precision, device)
    finally:
        del model, forward, optimizer, data
        release(device)


def section_mae_vit_b16(n: dict, params: dict, device: torch.device) -> dict:
    modes = {}
    for name, mode in MAE_MODES.items():
        try:
            modes[name] = mae_rate(n["vit_b"], n["mae_batch"], 0.75, True, mode, n, device)
        except Exception as err:  # one mode's failure (say, out of memory) keeps the others
            modes[name] = {"error": f"{type(err).__name__}: {err}"[:500]}
            release(device)
    base = modes["eager_fp32"].get("images_per_s")
    for rec in modes.values():
        if base and "images_per_s" in rec:
            rec["speedup_vs_eager_fp32"] = round(rec["images_per_s"] / base, 3)
    base_mem = modes["eager_fp32"].get("peak_memory_gib")
    for rec in modes.values():
        if base_mem and rec.get("peak_memory_gib"):
            rec["memory_vs_eager_fp32"] = round(rec["peak_memory_gib"] / base_mem, 3)
    return {"arch": n["vit_b"], "mask_ratio": 0.75, "norm_pix_loss": True, "modes": modes}


def profile_arch(params: dict, smoke: bool) -> dict:
    """The GPU profile's encoder and decoder as `mae_rate` takes them (28 px, 1 channel: Fashion-MNIST)."""
    m = params["model"]
    arch = {"img": 28, "patch": m["patch_size"], "chans": 1, "dim": m["embed_dim"], "depth": m["depth"],
            "heads": m["num_heads"], "dec": (m["decoder_embed_dim"], m["decoder_depth"], m["decoder_num_heads"])}
    if smoke:
        arch.update(dim=32, depth=3, heads=2, dec=(32, 1, 2))
    return arch


def section_gpu_profile_mae(n: dict, params: dict, device: torch.device) -> dict:
    pre, run_cfg = params["pretrain"], params["runtime"]
    arch = profile_arch(params, n["smoke"])
    # as pretrain runs the profile: its precision and compile choices (bf16 + compile on a GPU), fused AdamW
    mode = (run_cfg["precision"], rt.use_compile(device, run_cfg["compile"]), True)
    rec = mae_rate(arch, n["tiny_batch"], pre["mask_ratio"], pre["norm_pix_loss"], mode, n, device)
    return {"arch": arch, "precision": run_cfg["precision"], "compile": mode[1], **rec}


def section_gpu_profile_nna(n: dict, params: dict, device: torch.device) -> dict:
    cfg, run_cfg = params["refine"], params["runtime"]
    arch = profile_arch(params, n["smoke"])
    batch = n["nna_batch"] or cfg["batch_size"]
    torch.manual_seed(0)
    encoder = ViTEncoder(arch["img"], arch["patch"], 1, arch["dim"], arch["depth"], arch["heads"])
    blocks = head_blocks("last_third" if cfg["heads"] == "probe" else cfg["heads"], 0, arch["depth"])
    refiner = Refiner(encoder, blocks, cfg["proj_hidden"], cfg["proj_out"], cfg["pred_hidden"], cfg["queue_size"],
                      cfg["topk"]).to(device)
    ema = EMA(encoder, cfg["ema"], cfg["ema_warmup"])
    groups = layer_decay_groups(refiner, arch["depth"] + 1, layer_of(arch["depth"]), cfg["weight_decay"],
                                cfg["layer_decay"])
    optimizer = torch.optim.AdamW(groups, lr=0.0, betas=(cfg["beta1"], cfg["beta2"]),
                                  fused=fused_supported(device.type))
    data = random_images(2 * batch, 28, 1, device, [0.5], [0.25])
    views = device_views(data, cfg["global_scale_min"], cfg["local_crops"], tuple(cfg["local_scale"]),
                         cfg["local_size"] or None, cfg["photometric"])
    step_fn = refine_step_fn(refiner, views, Loss("nna", cfg["temperature"]))
    try:
        rec = train_rate(refiner, step_fn, optimizer, len(data), batch, n["warmup"], n["steps"],
                         run_cfg["precision"], device, after_step=lambda: ema.update(encoder))
    finally:
        del refiner, optimizer, data, ema
        release(device)
    # images/s counts source images; each gives two global views and `local_crops` small ones
    return {"arch": arch, "head_blocks": blocks, "views_per_image": 2 + cfg["local_crops"],
            "queue_size": cfg["queue_size"], "phase": "full (encoder and heads train; EMA update)", **rec}


def timed_twice(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of the second of two calls of `fn` (the first warms kernels and the allocator)."""
    fn()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def section_probe(n: dict, params: dict, device: torch.device) -> dict:
    cfg, run_cfg = params["probe"], params["runtime"]
    arch = profile_arch(params, n["smoke"])
    torch.manual_seed(0)
    encoder = ViTEncoder(arch["img"], arch["patch"], 1, arch["dim"], arch["depth"], arch["heads"]).to(device)
    bank = random_images(n["bank"], 28, 1, device, [0.5], [0.25])
    val = random_images(n["val"], 28, 1, device, [0.5], [0.25])
    autocast = lambda: rt.autocast(device, run_cfg["precision"])  # noqa: E731
    batch = min(cfg["batch_size"], n["bank"])
    probe_s = timed_twice(lambda: probe_encoder(encoder, bank, val, knn_protocol(cfg["knn"]), batch,
                                                cfg["chunk_size"], autocast), device)
    forward_s = timed_twice(lambda: [pooled_features(encoder, d, batch, autocast) for d in (bank, val)], device)
    del encoder, bank, val
    release(device)
    return {"arch": arch, "bank_images": n["bank"], "val_images": n["val"], "batch_size": batch, "knn": cfg["knn"],
            "blocks": arch["depth"], "probe_s": round(probe_s, 4), "forward_s": round(forward_s, 4),
            "probe_over_forward": round(probe_s / forward_s, 3)}


def section_chain(n: dict, params: dict, device: torch.device, smoke: bool, data_root: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="gpu-check-chain-") as tmp:
        work = make_workspace(Path(tmp), smoke, device.type, data_root)
        shortened = yaml.safe_load((work / "params.yaml").read_text())
        result = run_chain(work, lambda: release(device))
    result["data"]["stand_in"] = data_root is None
    result["params"] = {"pretrain.epochs": shortened["pretrain"]["epochs"],
                        "refine.head_epochs": shortened["refine"]["head_epochs"],
                        "refine.epochs": shortened["refine"]["epochs"],
                        "evaluate.finetune.epochs": shortened["evaluate"]["finetune"]["epochs"]}
    return result


def environment(device: torch.device, smoke: bool) -> dict:
    import timm

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"mode": "smoke" if smoke else "full", "device": device.type, "device_name": name,
            "torch": torch.__version__, "timm": timm.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "cpu_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="folder of the JSON and md")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, CPU by default: checks the code, not speed")
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                        help="default: cuda for a full run, cpu for --smoke")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--data-root", help="a Fashion-MNIST IDX folder for the chain (default: a digits stand-in)")
    args = parser.parse_args(argv)
    wanted = [s for s in args.sections.split(",") if s]
    if unknown := sorted(set(wanted) - set(SECTIONS)):
        parser.error(f"unknown sections {unknown} (known: {', '.join(SECTIONS)})")
    device = rt.resolve_device(args.device or ("cpu" if args.smoke else "cuda"))
    rt.seed_everything(0)  # the stages' runtime set-up: deterministic kernels where they exist
    n, params = sizes(args.smoke), profile_params()
    runners = {"mae_vit_b16": section_mae_vit_b16, "gpu_profile_mae": section_gpu_profile_mae,
               "gpu_profile_nna": section_gpu_profile_nna, "probe": section_probe,
               "chain": lambda n, p, d: section_chain(n, p, d, args.smoke, args.data_root)}
    stem = "gpu_check_smoke" if args.smoke else "gpu_check"
    report = {"environment": environment(device, args.smoke), "sections": {}}
    t_all = time.perf_counter()
    for name in wanted:
        t0 = time.perf_counter()
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        try:
            report["sections"][name] = runners[name](n, params, device)
        except Exception as err:  # record and go on: one section's failure must not lose the others
            report["sections"][name] = {"error": f"{type(err).__name__}: {err}"[:500],
                                        "traceback": traceback.format_exc().splitlines()[-6:]}
            release(device)
        report["sections"][name]["section_seconds"] = round(time.perf_counter() - t0, 1)
        report["total_seconds"] = round(time.perf_counter() - t_all, 1)
        write_json(args.out / f"{stem}.json", report)  # after every section: a killed run keeps what it measured
        write_text(args.out / f"{stem}.md", markdown(report))
    print(markdown(report))
    return 1 if any("error" in s for s in report["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
