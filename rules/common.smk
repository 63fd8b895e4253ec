# Helpers that turn the stage specs of pipeline/dag.py into rule inputs, outputs, params and commands.
# params.yaml is read (and validated) through pipeline.config, the same loader every stage uses, so a bad
# params file stops the workflow before any job runs.
import json

from pipeline import config as pipeline_config
from pipeline.dag import STAGES, code_deps

PARAMS = pipeline_config.load_params("params.yaml")
DATASET = PARAMS["data"]["dataset"]
VARIANTS = list(PARAMS["pretrain"]["variants"])
THREADS = PARAMS["runtime"]["threads"]
CONDA_ENV = "envs/pipeline.yaml"


wildcard_constraints:
    variant="|".join(VARIANTS),


def _fill(template):
    return template.replace("{dataset}", DATASET)


def _over_variants(templates):
    return [expand(_fill(t), variant=VARIANTS) if "{variant}" in t else _fill(t) for t in templates]


def stage_inputs(name):
    """Code files the stage imports, then its data deps (all variants' files for an all-variant stage)."""
    stage = STAGES[name]
    deps = [_fill(d) for d in stage.deps] if stage.per_variant else _over_variants(stage.deps)
    return code_deps(stage.module) + deps


def stage_outputs(name):
    """The stage's outputs; the report stage's figures and table are flagged for `snakemake --report`."""
    stage = STAGES[name]
    paths = [_fill(o) for o in (*stage.outs, *stage.files, *stage.metrics)]
    if name != "report":
        return paths
    return [report(p, category="figures") if p.endswith(".png")
            else report(p, category="table") if p.endswith("summary.csv") else p for p in paths]


def stage_params(name):
    """A function of the wildcards giving the JSON of exactly the params keys the stage reads."""
    keys = STAGES[name].params

    def values(wildcards):
        variant = wildcards.get("variant", "")
        selected = pipeline_config.select(PARAMS, [k.replace("{variant}", variant) for k in keys])
        return json.dumps(selected, sort_keys=True)

    return values


def stage_command(name):
    """A function of the wildcards giving the stage's command, identical to dvc.yaml's rendered cmd."""
    template = _fill(STAGES[name].cmd)

    def command(wildcards):
        return template.replace("{variant}", wildcards.get("variant", ""))

    return command


def all_targets():
    return [f for name in STAGES for f in _over_variants(stage_outputs(name))]


def stage_log(name):
    return f"logs/{name}/{{variant}}.log" if STAGES[name].per_variant else f"logs/{name}.log"


def stage_gpus(name):
    """One GPU for the stages that run a model when the device is not the CPU (the workflow profile caps the sum)."""
    return 0 if PARAMS["runtime"]["device"] == "cpu" or name in ("prepare", "report") else 1
