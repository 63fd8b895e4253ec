# Helpers that turn the stage specs of pipeline/dag.py into rule inputs, outputs, params and commands.
# params.yaml is read (and validated) through pipeline.config, the same loader every stage uses, so a bad
# params file stops the workflow before any job runs.
import json
import sys

from pipeline import config as pipeline_config
from pipeline.dag import STAGES, code_deps, init_files

# params.yaml is the one experiment definition, read by both tools: a --config/--configfile override would change
# what Snakemake runs but not what DVC records, so it is refused rather than silently ignored
if config:
    print("error: snakemake --config/--configfile is not read here; edit params.yaml, switch a profile "
          "(make profile P=<name>) or run an experiment with dvc exp run -S key=value", file=sys.stderr)
    sys.exit(2)
try:
    PARAMS = pipeline_config.load_params("params.yaml")
except pipeline_config.ConfigError as err:  # one line naming the key, exit 2, as every stage does
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
DATASET = PARAMS["data"]["dataset"]
VARIANTS = list(PARAMS["pretrain"]["variants"])
REFINED = PARAMS["refine"]["variants"]  # name -> {pretrained, objective}
SEEDS = [str(s) for s in PARAMS["seeds"]]  # training seeds: every per-variant job runs once per seed
THREADS = PARAMS["runtime"]["threads"]
CONDA_ENV = "envs/pipeline.yaml"


# the two kinds of variant are disjoint sets of names (checked by pipeline.config), so no path is ambiguous
wildcard_constraints:
    variant="|".join(VARIANTS),
    refined="|".join(REFINED),
    seed=r"\d+",


def _fill(template, refined=None, seed=None):
    path = template.replace("{dataset}", DATASET)
    if refined is not None:
        path = path.replace("{refined}", refined).replace("{pretrained}", REFINED[refined]["pretrained"])
    if seed is not None:
        path = path.replace("{seed}", seed)
    return path


def _over_variants(templates):
    """Each template expanded over every variant of the kind it names and every seed (or as is)."""
    out = []
    for t in templates:
        if "{variant}" in t:
            out += expand(_fill(t), variant=VARIANTS, seed=SEEDS)
        elif "{refined}" in t:
            out += [_fill(t, r, s) for r in REFINED for s in SEEDS]
        else:
            out.append(_fill(t))
    return out


def stage_inputs(name):
    """Code files the stage imports, then its data deps (all variants' files for an all-variant stage).

    A refinement job's inputs depend on its variant's pretrained source, so they come from a function.
    """
    stage = STAGES[name]
    code = code_deps(stage.module)
    if stage.per == "refined":
        return lambda wildcards: code + [_fill(d, wildcards.refined, wildcards.seed) for d in stage.deps]
    if stage.init:  # a variant started from a checkpoint file also depends on that file
        started = init_files(PARAMS)
        return lambda wildcards: code + [_fill(d, seed=wildcards.seed).replace("{variant}", wildcards.variant)
                                         for d in stage.deps] + ([started[wildcards.variant]]
                                                                 if wildcards.variant in started else [])
    return code + ([_fill(d) for d in stage.deps] if stage.per else _over_variants(stage.deps))


def stage_outputs(name):
    """The stage's outputs; the report stage's figures and table are flagged for `snakemake --report`, each with its
    caption rules/captions/<file stem>.rst (Snakemake reads a caption path relative to the Snakefile, which defines
    the rules, not to this file)."""
    stage = STAGES[name]
    paths = [_fill(o) for o in (*stage.outs, *stage.files, *stage.metrics)]
    if name != "report":
        return paths

    from pathlib import PurePath

    def caption(path):
        return f"rules/captions/{PurePath(path).stem}.rst"

    return [report(p, category="figures", caption=caption(p)) if p.endswith(".png")
            else report(p, category="table", caption=caption(p)) if p.endswith("summary.csv") else p for p in paths]


def _variant(wildcards):
    return wildcards.get("variant", wildcards.get("refined", ""))


def stage_params(name):
    """A function of the wildcards giving the JSON of exactly the params keys the stage reads."""
    keys = STAGES[name].params

    def values(wildcards):
        selected = pipeline_config.select(PARAMS, [k.replace("{variant}", _variant(wildcards)) for k in keys])
        return json.dumps(selected, sort_keys=True)

    return values


def stage_command(name):
    """A function of the wildcards giving the stage's command, identical to dvc.yaml's rendered cmd."""
    stage = STAGES[name]

    def command(wildcards):
        if stage.per == "refined":
            return _fill(stage.cmd, wildcards.refined, wildcards.seed)
        return _fill(stage.cmd, seed=wildcards.get("seed")).replace("{variant}", wildcards.get("variant", ""))

    return command


def all_targets():
    return [f for name in STAGES for f in _over_variants(stage_outputs(name))]


def stage_log(name):
    per = STAGES[name].per
    return f"logs/{name}/{{{per}}}/seed{{seed}}.log" if per else f"logs/{name}.log"


def stage_gpus(name):
    """GPUs of a job when the device is not the CPU: runtime.nproc for the stages that run under torchrun (they
    declare the key), one for the other model stages, none for prepare and report. The default workflow profile
    caps the sum (one GPU job at a time locally); SLURM jobs ask for this many GPUs each."""
    if PARAMS["runtime"]["device"] == "cpu" or name in ("prepare", "report"):
        return 0
    return PARAMS["runtime"]["nproc"] if "runtime.nproc" in STAGES[name].params else 1
