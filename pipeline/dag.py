"""The DAG spec: the one place that says what each stage runs, reads, writes and which params keys it reads.

The Snakefile builds its rules from these specs (rules/common.smk) and dvc.yaml is generated from them
(`python -m pipeline.dag > dvc.yaml`; a test checks the committed file is current). Paths are templates:
`{dataset}` is data.dataset, `{variant}` a key of pretrain.variants, `{refined}` a key of refine.variants,
`{pretrained}` the pretrain variant that refinement starts from and `{seed}` one of the training `seeds`: every
per-variant stage runs once per (variant, seed) and writes under <model>/seed<seed>/ (Snakemake wildcards, DVC
matrix items). Code dependencies are computed, not listed: every pipeline module a stage imports, found statically.

DVC: a per-variant stage is a `matrix` over the variants dict (its keys) and `${seeds}`, so seeds and variants
stay live params (`dvc exp run -S seeds=[0,1,2]` runs every job without a new dvc.yaml; only the top-level
plots, which list each model's file so a chart overlays them, then miss the new seeds' curves until dvc.yaml is
regenerated, as `make profile` does). A matrix item of a dict axis is its key
only (dvc 3.67: `${item.refined}` is the name, the value is out of reach, treeverse/dvc#10094), and interpolation
does not nest, so a stage whose paths name `{pretrained}` (refine, evaluate_refined) cannot look its source up.
Those two stages are written once per pretrain variant, `<stage>-<pretrained>`, a matrix over the names of its
refinements and `${seeds}`: the grouping of refine.variants by `pretrained` is read from params.yaml when dvc.yaml
is generated. Adding, removing or re-pointing a refinement therefore means regenerating dvc.yaml (the test of the
committed file fails otherwise, and DVC stops on the new refinement's missing model.pt, which probe_refined, a
live matrix over refine.variants, depends on); changing its objective or any other key does not.
A pretrain variant started from a checkpoint file (`pretrain.variants.<v>.init`) depends on that file, which the
variants dict cannot name per item either: such a variant gets its own entry, `pretrain-<v>`, whose dep is
`${pretrain.variants.<v>.init}` (so a new path needs no new dvc.yaml), and `pretrain` becomes a matrix over the names
of the others. Giving a variant an init file, or taking it away, therefore means regenerating dvc.yaml.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent



@dataclass(frozen=True)
class Stage:
    """One DAG stage. `outs` are DVC-cached (checkpoints); `files` are small outputs kept in git; `metrics` are DVC
    metrics files (only the report's headline table, so `dvc metrics show` / `dvc exp show` stay readable)."""

    name: str
    args: str
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    per: str = ""  # "variant": one job per pretrain variant; "refined": one per refine variant; "": one job
    runs: str = ""  # the stage module when it is not the stage's name (one module, two stages)
    init: bool = False  # a job also depends on its variant's checkpoint file, pretrain.variants.<v>.init

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
    Stage("pretrain", "--variant {variant} --seed {seed} --data results/data/{dataset} "
                      "--out results/pretrain/{variant}/seed{seed} --plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json"),
          outs=("results/pretrain/{variant}/seed{seed}/model.pt",),
          files=("results/plots/pretrain_curve/{variant}/seed{seed}.csv",
                 "results/pretrain/{variant}/seed{seed}/metrics.json"),
          per="variant", init=True),
    Stage("probe", "--variant {variant} --seed {seed} --data results/data/{dataset} "
                   "--model results/pretrain/{variant}/seed{seed}/model.pt --out results/probe/{variant}/seed{seed} "
                   "--plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/pretrain/{variant}/seed{seed}/model.pt"),
          files=("results/probe/{variant}/seed{seed}/blocks.json", "results/plots/knn_blocks/{variant}/seed{seed}.csv",
                 "results/probe/{variant}/seed{seed}/metrics.json"),
          per="variant"),
    Stage("analyze", "--variant {variant} --seed {seed} --data results/data/{dataset} "
                     "--model results/pretrain/{variant}/seed{seed}/model.pt --out results/analyze/{variant}/seed{seed}",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/pretrain/{variant}/seed{seed}/model.pt"),
          files=("results/analyze/{variant}/seed{seed}/frequency.csv",
                 "results/analyze/{variant}/seed{seed}/frequency.json"),
          per="variant"),
    Stage("refine", "--variant {refined} --seed {seed} --data results/data/{dataset} "
                    "--model results/pretrain/{pretrained}/seed{seed}/model.pt "
                    "--probe results/probe/{pretrained}/seed{seed}/blocks.json --out results/refine/{refined}/seed{seed} "
                    "--plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/pretrain/{pretrained}/seed{seed}/model.pt", "results/probe/{pretrained}/seed{seed}/blocks.json"),
          outs=("results/refine/{refined}/seed{seed}/model.pt",),
          files=("results/plots/refine_curve/{refined}/seed{seed}.csv",
                 "results/refine/{refined}/seed{seed}/metrics.json"),
          per="refined"),
    Stage("probe_refined", "--variant {refined} --seed {seed} --data results/data/{dataset} "
                           "--model results/refine/{refined}/seed{seed}/model.pt "
                           "--out results/probe/{refined}/seed{seed} --plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/refine/{refined}/seed{seed}/model.pt"),
          files=("results/probe/{refined}/seed{seed}/blocks.json", "results/plots/knn_blocks/{refined}/seed{seed}.csv",
                 "results/probe/{refined}/seed{seed}/metrics.json"),
          per="refined", runs="probe"),
    # --pretrained: the cut-only control (the pretrained encoder cut at the refined depth) when refine cut it
    Stage("evaluate_refined", "--variant {refined} --seed {seed} --data results/data/{dataset} "
                              "--model results/refine/{refined}/seed{seed}/model.pt "
                              "--pretrained results/pretrain/{pretrained}/seed{seed}/model.pt "
                              "--out results/evaluate/{refined}/seed{seed} --plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/data/{dataset}/fewshot.json", "results/refine/{refined}/seed{seed}/model.pt",
                "results/pretrain/{pretrained}/seed{seed}/model.pt"),
          files=("results/evaluate/{refined}/seed{seed}/details.json", "results/plots/spectrum/{refined}/seed{seed}.csv",
                 "results/evaluate/{refined}/seed{seed}/metrics.json"),
          per="refined", runs="evaluate"),
    Stage("evaluate", "--variant {variant} --seed {seed} --data results/data/{dataset} "
                      "--model results/pretrain/{variant}/seed{seed}/model.pt --out results/evaluate/{variant}/seed{seed} "
                      "--plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/data/{dataset}/fewshot.json", "results/pretrain/{variant}/seed{seed}/model.pt"),
          files=("results/evaluate/{variant}/seed{seed}/details.json", "results/plots/spectrum/{variant}/seed{seed}.csv",
                 "results/evaluate/{variant}/seed{seed}/metrics.json"),
          per="variant"),
    Stage("baselines", "--data results/data/{dataset} --out results/evaluate/baselines --plots results/plots",
          deps=("results/data/{dataset}/arrays.npz", "results/data/{dataset}/card.json",
                "results/data/{dataset}/fewshot.json"),
          files=("results/evaluate/baselines/details.json", "results/plots/knn_blocks/random-init.csv",
                 "results/plots/spectrum/random-init.csv", "results/plots/spectrum/pixels.csv",
                 "results/evaluate/baselines/metrics.json")),
    # every seed of every model: the report aggregates each metric over seeds (mean, std, n)
    Stage("report", "--probe results/probe --pretrain results/pretrain --analyze results/analyze "
                    "--evaluate results/evaluate --refine results/refine --plots results/plots "
                    "--out results/report",
          deps=("results/probe/{variant}/seed{seed}/blocks.json", "results/pretrain/{variant}/seed{seed}/metrics.json",
                "results/analyze/{variant}/seed{seed}/frequency.csv",
                "results/analyze/{variant}/seed{seed}/frequency.json",
                "results/evaluate/{variant}/seed{seed}/metrics.json", "results/evaluate/{variant}/seed{seed}/details.json",
                "results/plots/spectrum/{variant}/seed{seed}.csv",
                "results/probe/{refined}/seed{seed}/blocks.json", "results/evaluate/{refined}/seed{seed}/metrics.json",
                "results/evaluate/{refined}/seed{seed}/details.json", "results/refine/{refined}/seed{seed}/metrics.json",
                "results/plots/spectrum/{refined}/seed{seed}.csv",
                "results/plots/refine_curve/{refined}/seed{seed}.csv",
                "results/evaluate/baselines/metrics.json", "results/evaluate/baselines/details.json",
                "results/plots/spectrum/random-init.csv", "results/plots/spectrum/pixels.csv"),
          files=("results/report/summary.csv", "results/report/summary.md", "results/report/knn_blocks.png",
                 "results/report/frequency.png", "results/report/fusion_weights.png",
                 "results/report/fewshot.png", "results/report/spectrum.png",
                 "results/report/negatives_top_share.png", "results/report/all_metrics.json"),
          metrics=("results/report/metrics.json",)),
)}

# Top-level DVC plots: one chart per quantity, titled by it, with every model's file in it (DVC's multi-file form:
# `y` maps each file to its column), so `dvc plots show` draws each model once per chart and `dvc plots diff A B`
# overlays the two commits in each chart. A template names {variant} (every pretrain variant x seed), {refined}
# (every refinement x seed) or a baseline's one file; dvc_plots expands them from params, so a new variant or seed
# list needs a regenerated dvc.yaml for its lines to appear (the stages run without it; the parity test flags it).
# Refinement loss (about 4) and its accuracies (0 to 1) are separate charts, so neither flattens the other.
# The "live" charts read DVCLive's per-epoch tsv (<out>/live/plots/metrics/...), which a training stage appends to
# while it runs under either tool, so curves show before the stage ends. The declared CSVs cannot do this: they are
# outputs written once at the end (a killed run must not leave a partial tracked file). The tsv are gitignored
# working files: DVC leaves out a chart whose files are missing and exits 0, with the warning "DVC failed to load
# some plots" (an entry under "errors" in --json), as in a fresh clone and in every `dvc plots diff` of commits.
_KNN_FILES = ("results/plots/knn_blocks/{variant}/seed{seed}.csv",
              "results/plots/knn_blocks/{refined}/seed{seed}.csv", "results/plots/knn_blocks/random-init.csv")
_SPECTRUM_FILES = ("results/plots/spectrum/{variant}/seed{seed}.csv",
                   "results/plots/spectrum/{refined}/seed{seed}.csv", "results/plots/spectrum/random-init.csv",
                   "results/plots/spectrum/pixels.csv")
_PRETRAIN_LIVE = "results/pretrain/{variant}/seed{seed}/live/plots/metrics/train/"
_REFINE_LIVE = "results/refine/{refined}/seed{seed}/live/plots/metrics/refine/"
PLOTS: dict[str, dict] = {
    "knn_cls_per_block": {"files": _KNN_FILES, "x": "block", "y": "cls",
                          "title": "k-NN accuracy of the CLS token per block",
                          "x_label": "block (0-based)", "y_label": "k-NN accuracy (val)"},
    "knn_mean_patch_per_block": {"files": _KNN_FILES, "x": "block", "y": "mean_patch",
                                 "title": "k-NN accuracy of the mean patch token per block",
                                 "x_label": "block (0-based)", "y_label": "k-NN accuracy (val)"},
    "pretrain_loss": {"files": ("results/plots/pretrain_curve/{variant}/seed{seed}.csv",), "x": "epoch", "y": "loss",
                      "title": "pretraining loss (reconstruction)", "x_label": "epoch", "y_label": "loss"},
    "refine_loss": {"files": ("results/plots/refine_curve/{refined}/seed{seed}.csv",), "x": "epoch", "y": "loss",
                    "title": "refinement loss", "x_label": "epoch (heads, then encoder)", "y_label": "loss"},
    "refine_monitor": {"files": ("results/plots/refine_curve/{refined}/seed{seed}.csv",), "x": "epoch",
                       "y": ["knn", "nn_accuracy"],
                       "title": "refinement monitor: k-NN of the EMA encoder, NN-retrieval accuracy",
                       "x_label": "epoch (heads, then encoder)", "y_label": "accuracy"},
    "spectrum": {"files": _SPECTRUM_FILES, "x": "index", "y": "log10_singular_value_centred",
                 "title": "singular values of the feature covariance (val, L2-normalized, centred: Jing et al.)",
                 "x_label": "index", "y_label": "log10 singular value"},
    "live_pretrain_loss": {"files": (_PRETRAIN_LIVE + "loss.tsv",), "x": "step", "y": "loss",
                           "title": "live: pretraining loss while a stage trains (DVCLive)",
                           "x_label": "epoch (0-based)", "y_label": "loss"},
    "live_refine_loss": {"files": (_REFINE_LIVE + "loss.tsv",), "x": "step", "y": "loss",
                         "title": "live: refinement loss while a stage trains (DVCLive)",
                         "x_label": "epoch (0-based, both phases)", "y_label": "loss"},
    "live_refine_knn": {"files": (_REFINE_LIVE + "knn.tsv",), "x": "step", "y": "knn",
                        "title": "live: refinement k-NN monitor while a stage trains (DVCLive)",
                        "x_label": "epoch (0-based, both phases)", "y_label": "k-NN accuracy (monitor)"},
}
# the report's figures, drawn as image plots
IMAGE_PLOTS = ("results/report/knn_blocks.png", "results/report/frequency.png", "results/report/fusion_weights.png",
               "results/report/fewshot.png", "results/report/spectrum.png", "results/report/negatives_top_share.png")

# the params dict each kind of per-variant stage iterates over (with the training seeds)
MATRIX = {"variant": "pretrain.variants", "refined": "refine.variants"}
SEEDS = "seeds"


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
    """Every file of `pipeline` that `module` imports, transitively (static: no import runs)."""
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
    # params.schema.yaml is not a dependency: validation passes or stops a stage, it never changes an output, and
    # a stage depends on the values of the keys it declares (DVC params, Snakemake params). Were the schema a
    # dependency, adding any key to it would rerun the whole DAG.
    return sorted(str(f.relative_to(ROOT)) for f in seen)


def _dvc_path(template: str, per: str = "", pretrained: str = "") -> str:
    """A path or command template in DVC's syntax: `${data.dataset}`, the matrix items, a literal pretrained name."""
    path = template.replace("{dataset}", "${data.dataset}")
    if per:
        path = path.replace("{" + per + "}", "${item." + per + "}").replace("{seed}", "${item.seed}")
        path = path.replace("{pretrained}", pretrained)
    return path


def names_pretrained(stage: Stage) -> bool:
    """Whether the stage's command or deps name its refinement's source (then DVC needs one entry per source)."""
    return any("{pretrained}" in t for t in (stage.args, *stage.deps))


def _dvc_body(stage: Stage, pretrained: str = "") -> dict:
    deps = code_deps(stage.module)
    for d in stage.deps:
        # a stage over all variants depends on the folder that holds every variant's file
        if not stage.per and ("{variant}" in d or "{refined}" in d):
            d = d.split("/{")[0]
        deps.append(_dvc_path(d, stage.per, pretrained))
    item = "${item." + stage.per + "}"
    body: dict = {"cmd": _dvc_path(stage.cmd, stage.per, pretrained), "deps": list(dict.fromkeys(deps)),
                  "params": [p.replace("{variant}", item) for p in stage.params]}
    outs = [_dvc_path(o, stage.per, pretrained) for o in stage.outs]
    outs += [{_dvc_path(f, stage.per, pretrained): {"cache": False}} for f in stage.files]
    if outs:
        body["outs"] = outs
    if stage.metrics:
        body["metrics"] = [{_dvc_path(m, stage.per, pretrained): {"cache": False}} for m in stage.metrics]
    return body


def init_files(params: dict) -> dict[str, str]:
    """{pretrain variant: the checkpoint file it starts from} for the variants whose `init` is a file."""
    from pipeline.config import init_file

    return {name: f for name, spec in params["pretrain"]["variants"].items() if (f := init_file(spec))}


def dvc_stages(stage: Stage, params: dict) -> dict[str, dict]:
    """The dvc.yaml entries of `stage`: itself, or a matrix over its variants dict and `${seeds}` when it runs per
    (variant, seed); a stage naming `{pretrained}` gets one matrix per pretrain variant over its refinements; an
    `init` stage gets one entry per variant started from a file (see _init_stages)."""
    if not stage.per:
        return {stage.name: _dvc_body(stage)}
    seeds = "${" + SEEDS + "}"
    if stage.init and init_files(params):
        return _init_stages(stage, params, seeds)
    if not names_pretrained(stage):
        return {stage.name: {"matrix": {stage.per: "${" + MATRIX[stage.per] + "}", "seed": seeds},
                             **_dvc_body(stage)}}
    by_source: dict[str, list[str]] = {}
    for name, spec in params["refine"]["variants"].items():
        by_source.setdefault(spec["pretrained"], []).append(name)
    return {f"{stage.name}-{source}": {"matrix": {stage.per: refined, "seed": seeds}, **_dvc_body(stage, source)}
            for source, refined in by_source.items()}


def _init_stages(stage: Stage, params: dict, seeds: str) -> dict[str, dict]:
    """`<stage>-<variant>` for each variant started from a file, its dep `${pretrain.variants.<variant>.init}` (live:
    `dvc exp run -S` of the path tracks the new file), and `<stage>` over the names of the others."""
    started = init_files(params)
    rest = [n for n in params["pretrain"]["variants"] if n not in started]
    entries = {stage.name: {"matrix": {stage.per: rest, "seed": seeds}, **_dvc_body(stage)}} if rest else {}
    for name in started:
        body = _dvc_body(stage)
        body["deps"].append("${pretrain.variants." + name + ".init}")
        entries[f"{stage.name}-{name}"] = {"matrix": {stage.per: [name], "seed": seeds}, **body}
    return entries


def dvc_yaml(params: dict) -> dict:
    """The whole dvc.yaml document for `params` (only refine.variants' grouping by pretrained is read)."""
    stages: dict = {}
    for stage in STAGES.values():
        stages.update(dvc_stages(stage, params))
    return {"stages": stages, "plots": dvc_plots(params)}


def plot_files(templates: tuple[str, ...], params: dict) -> list[str]:
    """The files of `templates` for `params`: each {variant} template over pretrain.variants x seeds, each {refined}
    one over refine.variants x seeds (model by model, seeds within), the others as they are."""
    seeds = params[SEEDS]
    files = []
    for t in templates:
        per = next((p for p in MATRIX if "{" + p + "}" in t), None)
        names = list(params[MATRIX[per].split(".")[0]]["variants"]) if per else [None]
        files += [t.replace("{" + per + "}", n).replace("{seed}", str(s)) for n in names for s in seeds] if per else [t]
    return files


def dvc_plots(params: dict) -> list:
    """dvc.yaml's top-level plots: one chart per PLOTS quantity, `y` mapping every model's file to its column(s),
    then the report's PNGs."""
    def columns(y: str | list[str]) -> str | list[str]:
        return y if isinstance(y, str) else list(y)  # a list per file: a shared one would dump as a YAML alias

    charts = [{plot_id: {"title": spec["title"], "x": spec["x"], "x_label": spec["x_label"],
                         "y": {f: columns(spec["y"]) for f in plot_files(spec["files"], params)},
                         "y_label": spec["y_label"]}}
              for plot_id, spec in PLOTS.items()]
    return charts + list(IMAGE_PLOTS)


def rule_of(dvc_name: str) -> str:
    """The stage (Snakemake rule) of an expanded DVC stage name: `refine-mae@mae_nna-0` -> `refine`."""
    return dvc_name.split("@")[0].split("-")[0]


def main(argv: list[str] | None = None) -> int:
    import argparse

    import yaml

    from pipeline.config import load_params
    from pipeline.errors import ConfigError

    parser = argparse.ArgumentParser(prog="python -m pipeline.dag", description="print dvc.yaml")
    parser.add_argument("--params", default="params.yaml", help="read for refine.variants' pretrained sources")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    header = ("# Generated by `python -m pipeline.dag > dvc.yaml` from pipeline/dag.py and params.yaml (refine.variants'\n"
              "# pretrained sources); do not edit by hand.\n")
    sys.stdout.write(header + yaml.safe_dump(dvc_yaml(params), sort_keys=False, width=120))
    return 0


if __name__ == "__main__":
    sys.exit(main())
