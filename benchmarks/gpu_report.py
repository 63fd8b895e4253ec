"""The GPU check's markdown table and its targets (issue 20), from the JSON report of benchmarks/gpu_check.py."""
from __future__ import annotations

from typing import Any

# (section, dotted path in it, comparison, target, unit): the acceptance targets on one NVIDIA H200
TARGETS = (
    ("mae_vit_b16", "modes.bf16_compile_fused.images_per_s", ">=", 6000, "img/s"),
    ("mae_vit_b16", "modes.bf16_compile_fused.peak_memory_gib", "<=", 14.4, "GiB"),
    ("gpu_profile_mae", "images_per_s", ">=", 100000, "img/s"),
    ("gpu_profile_nna", "images_per_s", ">=", 50000, "img/s"),
    ("probe", "probe_over_forward", "<=", 2.0, "x"),
)
# the chain's headline numbers per stage (its JSON keeps each stage's whole metrics.json)
HEADLINE = {"pretrain": ("loss",), "probe": ("depth", "knn_cls_best", "knn_cls_last"),
            "refine": ("loss", "nn_accuracy", "knn"),
            "evaluate_refined": ("knn_cls", "linear", "fewshot_1", "fewshot_10", "kmeans_acc")}


def lookup(section: dict, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(section, dict) or key not in section:
            return None
        section = section[key]
    return section


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def verdict(value: Any, op: str, target: float, smoke: bool) -> str:
    if smoke:
        return "n/a (smoke)"
    if value is None:
        return "not measured"
    return "pass" if (value >= target if op == ">=" else value <= target) else "FAIL"


def target_rows(report: dict, smoke: bool) -> list[str]:
    rows = ["| section | measurement | value | target | verdict |", "|---|---|---|---|---|"]
    for section, path, op, target, unit in TARGETS:
        value = lookup(report["sections"].get(section, {}), path)
        rows.append(f"| {section} | {path} | {_fmt(value)} {unit} | {op} {_fmt(target)} {unit} | "
                    f"{verdict(value, op, target, smoke)} |")
    return rows


def mae_rows(section: dict) -> list[str]:
    rows = ["| mode | img/s | ms/step | peak GiB | speed vs eager fp32 | memory vs eager fp32 |",
            "|---|---|---|---|---|---|"]
    for mode, rec in section.get("modes", {}).items():
        if "error" in rec:
            rows.append(f"| {mode} | error: {rec['error'][:120]} | | | | |")
            continue
        rows.append(f"| {mode} | {_fmt(rec['images_per_s'])} | {_fmt(rec['ms_per_step'])} | "
                    f"{_fmt(rec['peak_memory_gib'])} | {_fmt(rec.get('speedup_vs_eager_fp32'))} | "
                    f"{_fmt(rec.get('memory_vs_eager_fp32'))} |")
    return rows


def chain_rows(section: dict) -> list[str]:
    rows = ["| stage | seconds | result |", "|---|---|---|"]
    for stage, rec in section.get("stages", {}).items():
        metrics = section.get("metrics", {}).get(stage, {})
        shown = ", ".join(f"{k} {_fmt(metrics[k])}" for k in HEADLINE.get(stage, ()) if k in metrics)
        rows.append(f"| {stage} | {_fmt(rec['seconds'])} | {rec.get('error', shown) or 'ok'} |")
    return rows


def markdown(report: dict) -> str:
    env = report["environment"]
    smoke = env["mode"] == "smoke"
    title = ("# GPU check: SMOKE RUN (tiny sizes; checks the code paths, its numbers are not measurements)"
             if smoke else "# GPU check")
    lines = [title, "", f"{env['device_name']} ({env['device']}), torch {env['torch']}, timm {env['timm']}, "
             f"CUDA {env['cuda']}, Python {env['python']}; total {report.get('total_seconds', 0):.0f} s", "",
             "## Targets", "", *target_rows(report, smoke), ""]
    sections = report["sections"]
    if "mae_vit_b16" in sections and "modes" in sections["mae_vit_b16"]:
        arch = sections["mae_vit_b16"]["arch"]
        lines += [f"## MAE ViT-B/16 training ({arch['img']} px, patch {arch['patch']}, mask 0.75)", "",
                  *mae_rows(sections["mae_vit_b16"]), ""]
    for name in ("gpu_profile_mae", "gpu_profile_nna"):
        rec = sections.get(name, {})
        if "images_per_s" in rec:
            lines += [f"- {name}: {_fmt(rec['images_per_s'])} img/s at batch {rec['batch']} "
                      f"({_fmt(rec['ms_per_step'])} ms/step, peak {_fmt(rec['peak_memory_gib'])} GiB)"]
    rec = sections.get("probe", {})
    if "probe_s" in rec:
        lines += [f"- probe: {rec['blocks']} blocks over {rec['bank_images']:,} + {rec['val_images']:,} images in "
                  f"{rec['probe_s']:.3f} s; one forward pass {rec['forward_s']:.3f} s; ratio "
                  f"{rec['probe_over_forward']:.2f}"]
    if "chain" in sections and "stages" in sections["chain"]:
        data = sections["chain"].get("data", {})
        lines += ["", f"## Shortened GPU-profile chain ({'digits stand-in' if data.get('stand_in') else 'data'}: "
                  f"{data.get('origin', '?')}, {data.get('counts', {})})", "", *chain_rows(sections["chain"])]
    errors = {k: v["error"] for k, v in sections.items() if "error" in v}
    if errors:
        lines += ["", "## Errors", "", *(f"- {k}: {v}" for k, v in errors.items())]
    return "\n".join(lines) + "\n"
