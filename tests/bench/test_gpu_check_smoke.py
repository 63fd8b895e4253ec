"""benchmarks/gpu_check.py --smoke: every section of the GPU check runs on the CPU at tiny sizes, as on a machine
without dvclive (the stages fall back to pipeline/live.py's no-op logger), and writes its JSON and markdown."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

# the GPU machine has no dvclive: hide it, then run the check as a script
HIDE_DVCLIVE_AND_RUN = ("import runpy, sys; sys.modules['dvclive'] = None; sys.argv = sys.argv[1:]; "
                        "runpy.run_path(sys.argv[0], run_name='__main__')")


def test_gpu_check__smoke_run_writes_every_section_and_the_table(tmp_path):
    proc = subprocess.run([sys.executable, "-c", HIDE_DVCLIVE_AND_RUN, str(REPO / "benchmarks" / "gpu_check.py"),
                           "--smoke", "--out", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check_smoke.json").read_text())
    env, sections = report["environment"], report["sections"]
    assert env["mode"] == "smoke" and env["device"] == "cpu" and env["torch"] and env["timm"]
    assert set(sections) == {"mae_vit_b16", "gpu_profile_mae", "gpu_profile_nna", "probe", "chain"}  # sorted keys
    assert not [name for name, s in sections.items() if "error" in s]
    modes = sections["mae_vit_b16"]["modes"]
    assert set(modes) == {"eager_fp32", "bf16", "bf16_compile_fused"}
    assert modes["eager_fp32"]["speedup_vs_eager_fp32"] == 1.0
    assert all(m["images_per_s"] > 0 and m["peak_memory_gib"] is None for m in modes.values())  # no GPU memory
    assert sections["gpu_profile_mae"]["images_per_s"] > 0 and sections["gpu_profile_nna"]["images_per_s"] > 0
    probe = sections["probe"]
    # the ratio comes from the unrounded seconds: it must lie within what the 4-decimal seconds allow (+ its own 3)
    low = (probe["probe_s"] - 5e-5) / (probe["forward_s"] + 5e-5)
    high = (probe["probe_s"] + 5e-5) / (probe["forward_s"] - 5e-5)
    assert low - 5e-4 <= probe["probe_over_forward"] <= high + 5e-4
    chain = sections["chain"]
    assert set(chain["stages"]) == {"prepare", "pretrain", "probe", "refine", "evaluate_refined"}
    assert chain["data"]["stand_in"] and chain["data"]["shape"] == [28, 28, 1]
    assert 0.0 <= chain["metrics"]["evaluate_refined"]["knn_cls"] <= 1.0
    assert "dvclive is not installed" in proc.stderr  # pretrain and refine ran on the fallback logger
    table = (tmp_path / "gpu_check_smoke.md").read_text()
    assert table.startswith("# GPU check: SMOKE RUN")
    assert "| mae_vit_b16 | modes.bf16_compile_fused.images_per_s |" in table and "n/a (smoke)" in table
    assert table.index("| prepare |") < table.index("| pretrain |") < table.index("| evaluate_refined |")
