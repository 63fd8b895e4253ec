"""The DAG spec: the one place that says what each stage runs, reads, writes and which params keys it reads.

The Snakefile builds its rules from these specs (rules/common.smk) and dvc.yaml is generated from them
(`python -m pipeline.dag > dvc.yaml`; a test checks the committed file is current). Paths are templates:
`{dataset}` is data.dataset, `{variant}` a key of pretrain.variants, `{refined}` a key of refine.variants and
`{pretrained}` the pretrain variant that refinement starts from (Snakemake wildcards, DVC foreach keys/items).
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
    per: str = ""  # "variant": one job per pretrain variant; "refined": one per refine variant; "": one job
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
          per="variant"),
    Stage("probe", "--variant {variant} --data results/data/{dataset} --model results/pretrain/{variant}/model.pt "
                   "--out results/probe/{variant} --plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/pretrain/{variant}/model.pt"),
          files=("results/probe/{variant}/blocks.json", "results/plots/knn_blocks/{variant}.csv"),
          metrics=("results/probe/{variant}/metrics.json",),
          per="variant"),
    Stage("analyze", "--variant {variant} --data results/data/{dataset} --model results/pretrain/{variant}/model.pt "
                     "--out results/analyze/{variant}",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/pretrain/{variant}/model.pt"),
          files=("results/analyze/{variant}/frequency.csv", "results/analyze/{variant}/frequency.json"),
          per="variant"),
    Stage("refine", "--variant {refined} --data results/data/{dataset} --model results/pretrain/{pretrained}/model.pt "
                    "--probe results/probe/{pretrained}/blocks.json --out results/refine/{refined} "
                    "--plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/pretrain/{pretrained}/model.pt", "results/probe/{pretrained}/blocks.json"),
          outs=("results/refine/{refined}/model.pt",),
          files=("results/plots/refine_curve/{refined}.csv",),
          metrics=("results/refine/{refined}/metrics.json",),
          per="refined"),
    Stage("probe_refined", "--variant {refined} --data results/data/{dataset} "
                           "--model results/refine/{refined}/model.pt --out results/probe/{refined} "
                           "--plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/refine/{refined}/model.pt"),
          files=("results/probe/{refined}/blocks.json", "results/plots/knn_blocks/{refined}.csv"),
          metrics=("results/probe/{refined}/metrics.json",),
          per="refined", runs="probe"),
    Stage("evaluate_refined", "--variant {refined} --data results/data/{dataset} "
                              "--model results/refine/{refined}/model.pt --out results/evaluate/{refined} "
                              "--plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/data/{dataset}/fewshot.json", "results/refine/{refined}/model.pt"),
          files=("results/evaluate/{refined}/details.json", "results/plots/spectrum/{refined}.csv"),
          metrics=("results/evaluate/{refined}/metrics.json",),
          per="refined", runs="evaluate"),
    Stage("evaluate", "--variant {variant} --data results/data/{dataset} --model results/pretrain/{variant}/model.pt "
                      "--out results/evaluate/{variant} --plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/data/{dataset}/fewshot.json", "results/pretrain/{variant}/model.pt"),
          files=("results/evaluate/{variant}/details.json", "results/plots/spectrum/{variant}.csv"),
          metrics=("results/evaluate/{variant}/metrics.json",),
          per="variant"),
    Stage("baselines", "--data results/data/{dataset} --out results/evaluate/baselines --plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/data/{dataset}/fewshot.json"),
          files=("results/evaluate/baselines/details.json", "results/plots/knn_blocks/random-init.csv",
                 "results/plots/spectrum/random-init.csv", "results/plots/spectrum/pixels.csv"),
          metrics=("results/evaluate/baselines/metrics.json",)),
    Stage("report", "--probe results/probe --pretrain results/pretrain --analyze results/analyze "
                    "--evaluate results/evaluate --refine results/refine --plots results/plots "
                    "--out results/report",
          deps=("results/probe/{variant}/blocks.json", "results/pretrain/{variant}/metrics.json",
                "results/analyze/{variant}/frequency.csv", "results/analyze/{variant}/frequency.json",
                "results/evaluate/{variant}/metrics.json", "results/evaluate/{variant}/details.json",
                "results/plots/spectrum/{variant}.csv",
                "results/probe/{refined}/blocks.json", "results/evaluate/{refined}/metrics.json",
                "results/evaluate/{refined}/details.json", "results/refine/{refined}/metrics.json",
                "results/plots/spectrum/{refined}.csv",
                "results/evaluate/baselines/metrics.json", "results/evaluate/baselines/details.json",
                "results/plots/spectrum/random-init.csv", "results/plots/spectrum/pixels.csv"),
          files=("results/report/summary.csv", "results/report/summary.md", "results/report/knn_blocks.png",
                 "results/report/frequency.png", "results/report/fusion_weights.png",
                 "results/report/fewshot.png", "results/report/spectrum.png"),
          metrics=("results/report/metrics.json",)),
)}

# top-level DVC plots: a folder of per-variant CSVs each, drawn as one figure
PLOTS = {
    "results/plots/knn_blocks": {"x": "block", "y": ["cls", "mean_patch"],
                                 "title": "k-NN accuracy per block (validation split)"},
    "results/plots/pretrain_curve": {"x": "epoch", "y": ["loss"], "title": "pretraining loss"},
    "results/plots/refine_curve": {"x": "epoch", "y": ["loss", "alignment", "nn_accuracy", "knn"],
                                   "title": "contrastive refinement"},
    "results/plots/spectrum": {"x": "index", "y": ["log10_singular_value"],
                               "title": "singular values of the feature covariance (val, L2-normalized)"},
    "results/report/knn_blocks.png": {},
    "results/report/frequency.png": {},
    "results/report/fusion_weights.png": {},
    "results/report/fewshot.png": {},
    "results/report/spectrum.png": {},
}

# the params dict each kind of per-variant stage iterates over
FOREACH = {"variant": "pretrain.variants", "refined": "refine.variants"}


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


def _dvc_path(template: str, per: str = "") -> str:
    path = template.replace("{dataset}", "${data.dataset}")
    if per:
        path = path.replace("{" + per + "}", "${key}").replace("{pretrained}", "${item.pretrained}")
    return path


def dvc_stage(stage: Stage) -> dict:
    """The dvc.yaml entry of `stage` (a foreach over pretrain.variants or refine.variants when it runs per one)."""
    deps = code_deps(stage.module)
    for d in stage.deps:
        # a stage over all variants depends on the folder that holds every variant's file
        if not stage.per and ("{variant}" in d or "{refined}" in d):
            d = d.split("/{")[0]
        deps.append(_dvc_path(d, stage.per))
    body: dict = {"cmd": _dvc_path(stage.cmd, stage.per), "deps": list(dict.fromkeys(deps)),
                  "params": [p.replace("{variant}", "${key}") for p in stage.params]}
    outs = [_dvc_path(o, stage.per) for o in stage.outs]
    outs += [{_dvc_path(f, stage.per): {"cache": False}} for f in stage.files]
    if outs:
        body["outs"] = outs
    if stage.metrics:
        body["metrics"] = [{_dvc_path(m, stage.per): {"cache": False}} for m in stage.metrics]
    if stage.per:
        return {"foreach": "${" + FOREACH[stage.per] + "}", "do": body}
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
