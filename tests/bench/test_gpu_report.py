"""benchmarks/gpu_report.py: the GPU check's targets are judged pass/FAIL on a full run, never on a smoke run."""
from __future__ import annotations

from benchmarks.gpu_report import markdown

ENV = {"device": "cuda", "device_name": "NVIDIA H200", "torch": "2.14", "timm": "1.0", "cuda": "13.0",
       "python": "3.12"}


def report(mode: str) -> dict:
    mae = {"images_per_s": 6500.0, "ms_per_step": 39.4, "peak_memory_gib": 15.0}  # fast enough, too much memory
    return {"environment": {**ENV, "mode": mode}, "total_seconds": 300.0, "sections": {
        "mae_vit_b16": {"arch": {"img": 224, "patch": 16}, "modes": {"bf16_compile_fused": mae}},
        "gpu_profile_nna": {"images_per_s": 49999.0, "batch": 1024, "ms_per_step": 20.5, "peak_memory_gib": 3.0},
        "probe": {"error": "RuntimeError: boom"}}}


def test_markdown__full_run_judges_each_target():
    cells = [line.strip("| ").split(" | ") for line in markdown(report("full")).splitlines() if line.startswith("| ")]
    verdicts = {(c[0], c[1]): c[-1] for c in cells if len(c) == 5}
    assert verdicts["mae_vit_b16", "modes.bf16_compile_fused.images_per_s"] == "pass"  # 6,500 >= 6,000
    assert verdicts["mae_vit_b16", "modes.bf16_compile_fused.peak_memory_gib"] == "FAIL"  # 15.0 > 14.4 GiB
    assert verdicts["gpu_profile_nna", "images_per_s"] == "FAIL"  # 49,999 < 50,000
    assert verdicts["gpu_profile_mae", "images_per_s"] == "not measured"
    assert verdicts["probe", "probe_over_forward"] == "not measured"  # the section failed


def test_markdown__smoke_run_judges_nothing_and_lists_errors():
    text = markdown(report("smoke"))
    assert text.startswith("# GPU check: SMOKE RUN")
    assert "pass" not in text and "FAIL" not in text
    assert "- probe: RuntimeError: boom" in text
