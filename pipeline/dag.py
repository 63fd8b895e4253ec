"""The DAG spec: the one place that says what each stage runs, reads, writes and which params keys it reads.

The Snakefile builds its rules from these specs (rules/common.smk) and dvc.yaml is generated from them
(`python -m pipeline.dag > dvc.yaml`; a test checks the committed file is current). Paths are templates:
`{variant}` is a pretraining variant (Snakemake wildcard, DVC foreach key), `{dataset}` is data.dataset.
Code dependencies are computed, not listed: every pipeline module a stage imports, found statically.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent



@dataclass(frozen=True)
class Stage:
    """One DAG stage. `outs` are DVC-cached (checkpoints); `files` are small outputs kept in git."""

    name: str
    args: str
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    per_variant: bool = False
    runs: str = ""  # the stage module when it is not the stage's name (one module, two stages)

    @property
    def module(self) -> str:
        return f"pipeline.stages.{self.runs or self.name}"

    @property
    def params(self) -> tuple[str, ...]:
        """The stage module's PARAMS tuple, read from its source without importing it (torch stays unloaded)."""
        return stage_params_keys(self.module)

    @property
    def cmd(self) -> str:
        return f"python -m {self.module} {self.args}"


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("prepare", "--out results/data/{dataset}",
          outs=("results/data/{dataset}/arrays.npz",),
          files=("results/data/{dataset}/fewshot.json", "results/data/{dataset}/card.json")),
    Stage("pretrain", "--variant {variant} --data results/data/{dataset} --out results/pretrain/{variant} "
                      "--plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json"),
          outs=("results/pretrain/{variant}/model.pt",),
          files=("results/plots/pretrain_curve/{variant}.csv",),
          metrics=("results/pretrain/{variant}/metrics.json",),
          per_variant=True),
    Stage("probe", "--variant {variant} --data results/data/{dataset} --model results/pretrain/{variant}/model.pt "
                   "--out results/probe/{variant} --plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/pretrain/{variant}/model.pt"),
          files=("results/probe/{variant}/blocks.json", "results/plots/knn_blocks/{variant}.csv"),
          metrics=("results/probe/{variant}/metrics.json",),
          per_variant=True),
    Stage("analyze", "--variant {variant} --data results/data/{dataset} --model results/pretrain/{variant}/model.pt "
                     "--out results/analyze/{variant}",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/pretrain/{variant}/model.pt"),
          files=("results/analyze/{variant}/frequency.csv", "results/analyze/{variant}/frequency.json"),
          per_variant=True),
    Stage("refine", "--variant {variant} --data results/data/{dataset} --model results/pretrain/{variant}/model.pt "
                    "--probe results/probe/{variant}/blocks.json --out results/refine/{variant} --plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/pretrain/{variant}/model.pt", "results/probe/{variant}/blocks.json"),
          outs=("results/refine/{variant}/model.pt",),
          files=("results/plots/refine_curve/{variant}.csv",),
          metrics=("results/refine/{variant}/metrics.json",),
          per_variant=True),
    Stage("probe_refined", "--variant {variant} --label {variant}-refined --data results/data/{dataset} "
                           "--model results/refine/{variant}/model.pt --out results/probe/{variant}-refined "
                           "--plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/refine/{variant}/model.pt"),
          files=("results/probe/{variant}-refined/blocks.json", "results/plots/knn_blocks/{variant}-refined.csv"),
          metrics=("results/probe/{variant}-refined/metrics.json",),
          per_variant=True, runs="probe"),
    Stage("evaluate_refined", "--variant {variant} --data results/data/{dataset} "
                              "--model results/refine/{variant}/model.pt --out results/evaluate/{variant}-refined",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/data/{dataset}/fewshot.json", "results/refine/{variant}/model.pt"),
          files=("results/evaluate/{variant}-refined/details.json",),
          metrics=("results/evaluate/{variant}-refined/metrics.json",),
          per_variant=True, runs="evaluate"),
    Stage("evaluate", "--variant {variant} --data results/data/{dataset} --model results/pretrain/{variant}/model.pt "
                      "--out results/evaluate/{variant}",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/data/{dataset}/fewshot.json", "results/pretrain/{variant}/model.pt"),
          files=("results/evaluate/{variant}/details.json",),
          metrics=("results/evaluate/{variant}/metrics.json",),
          per_variant=True),
    Stage("baselines", "--data results/data/{dataset} --out results/evaluate/baselines --plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/data/{dataset}/fewshot.json"),
          files=("results/evaluate/baselines/details.json", "results/plots/knn_blocks/random-init.csv"),
          metrics=("results/evaluate/baselines/metrics.json",)),
    Stage("report", "--probe results/probe --pretrain results/pretrain --analyze results/analyze "
                    "--evaluate results/evaluate --refine results/refine --out results/report",
          deps=("results/probe/{variant}/blocks.json", "results/pretrain/{variant}/metrics.json",
                "results/analyze/{variant}/frequency.csv", "results/analyze/{variant}/frequency.json",
                "results/evaluate/{variant}/metrics.json", "results/evaluate/{variant}/details.json",
                "results/probe/{variant}-refined/blocks.json", "results/evaluate/{variant}-refined/metrics.json",
                "results/evaluate/{variant}-refined/details.json", "results/refine/{variant}/metrics.json",
                "results/evaluate/baselines/metrics.json", "results/evaluate/baselines/details.json"),
          files=("results/report/summary.csv", "results/report/summary.md", "results/report/knn_blocks.png",
                 "results/report/frequency.png", "results/report/fusion_weights.png",
                 "results/report/fewshot.png"),
          metrics=("results/report/metrics.json",)),
)}

# top-level DVC plots: a folder of per-variant CSVs each, drawn as one figure
PLOTS = {
    "results/plots/knn_blocks": {"x": "block", "y": ["cls", "mean_patch"],
                                 "title": "k-NN accuracy per block (validation split)"},
    "results/plots/pretrain_curve": {"x": "epoch", "y": ["loss"], "title": "pretraining loss"},
    "results/plots/refine_curve": {"x": "epoch", "y": ["loss", "alignment", "nn_accuracy", "knn"],
                                   "title": "NNA refinement"},
    "results/report/knn_blocks.png": {},
    "results/report/frequency.png": {},
    "results/report/fusion_weights.png": {},
    "results/report/fewshot.png": {},
}


def _module_file(module: str) -> Path | None:
    rel = Path(*module.split("."))
    for cand in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def stage_params_keys(module: str) -> tuple[str, ...]:
    """The literal `PARAMS = (...)` tuple at the top level of a stage module."""
    tree = ast.parse(_module_file(module).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["PARAMS"]:
            return tuple(ast.literal_eval(node.value))
    raise LookupError(f"{module} declares no PARAMS tuple")


def code_deps(module: str) -> list[str]:
    """Every file of `pipeline` that `module` imports, transitively (static: no import runs), plus the schema."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # a module's packages run their __init__ too
            f = _module_file(".".join(parts[:i]))
            if f is None or f in seen:
                continue
            seen.add(f)
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
                    todo.append(node.module)
                    todo.extend(f"{node.module}.{a.name}" for a in node.names)
                elif isinstance(node, ast.Import):
                    todo.extend(a.name for a in node.names if a.name.startswith("pipeline"))
    files = {str(f.relative_to(ROOT)) for f in seen}
    if "pipeline/config.py" in files:
        files.add("pipeline/params.schema.yaml")
    return sorted(files)


def _dvc_path(template: str) -> str:
    return template.replace("{dataset}", "${data.dataset}").replace("{variant}", "${key}")


def dvc_stage(stage: Stage) -> dict:
    """The dvc.yaml entry of `stage` (a foreach over pretrain.variants when it runs per variant)."""
    deps = code_deps(stage.module)
    for d in stage.deps:
        # a stage over all variants depends on the folder that holds every variant's file
        deps.append(_dvc_path(d.split("/{variant}")[0]) if "{variant}" in d and not stage.per_variant
                    else _dvc_path(d))
    body: dict = {"cmd": _dvc_path(stage.cmd), "deps": list(dict.fromkeys(deps)),
                  "params": [_dvc_path(p) for p in stage.params]}
    outs = [_dvc_path(o) for o in stage.outs] + [{_dvc_path(f): {"cache": False}} for f in stage.files]
    if outs:
        body["outs"] = outs
    if stage.metrics:
        body["metrics"] = [{_dvc_path(m): {"cache": False}} for m in stage.metrics]
    if stage.per_variant:
        return {"foreach": "${pretrain.variants}", "do": body}
    return body


def dvc_yaml() -> dict:
    """The whole dvc.yaml document."""
    return {"stages": {name: dvc_stage(s) for name, s in STAGES.items()},
            "plots": [{path: props} if props else path for path, props in PLOTS.items()]}


def main() -> int:
    import yaml

    header = "# Generated by `python -m pipeline.dag > dvc.yaml` from pipeline/dag.py; do not edit by hand.\n"
    sys.stdout.write(header + yaml.safe_dump(dvc_yaml(), sort_keys=False, width=120))
    return 0


if __name__ == "__main__":
    sys.exit(main())
