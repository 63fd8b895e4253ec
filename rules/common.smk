# Config access and input functions for the rules (the snakemake-workflows template's common.smk).
# params.yaml is the one experiment definition, read by both tools through pipeline.config, the loader every stage
# uses: a bad params file stops the workflow with one line before any job runs.
import json
import sys

from pipeline import config as pipeline_config
from pipeline.deps import code_files, stage_params_keys

# A --config/--configfile override would change what Snakemake runs but not what DVC records, so it is refused.
if config:
    print("error: snakemake --config/--configfile is not read here; edit params.yaml, switch a profile "
          "(make profile P=<name>) or run an experiment with dvc exp run -S key=value", file=sys.stderr)
    sys.exit(2)
try:
    PARAMS = pipeline_config.load_params("params.yaml")
except pipeline_config.ConfigError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)

DATA = f"results/data/{PARAMS['data']['dataset']}"  # prepare's folder; the dataset is a params key
VARIANTS = list(PARAMS["pretrain"]["variants"])  # pretrain variants: the {variant} wildcard
REFINED = PARAMS["refine"]["variants"]  # refinements: the {refined} wildcard, name -> {pretrained, objective, ...}
SEEDS = [str(s) for s in PARAMS["seeds"]]  # training seeds: every per-model job runs once per seed
THREADS = PARAMS["runtime"]["threads"]
CONDA_ENV = "../envs/pipeline.yaml"  # relative to the rules/*.smk file that names it


# pipeline.config checks that the two kinds of name are disjoint, so no path is ambiguous
wildcard_constraints:
    variant="|".join(VARIANTS),
    refined="|".join(REFINED),
    seed=r"\d+",


def code(stage):
    """The pipeline files `python -m pipeline.stages.<stage>` imports: a job reruns when one of them changes."""
    return code_files(f"pipeline.stages.{stage}")


def params_of(stage):
    """An input function's twin for params: the JSON of exactly the params keys the stage module declares (its
    PARAMS tuple), so Snakemake reruns a job when one of them changes and only then."""
    keys = stage_params_keys(f"pipeline.stages.{stage}")

    def values(wildcards):
        name = wildcards.get("variant", wildcards.get("refined", ""))
        selected = pipeline_config.select(PARAMS, [k.replace("{variant}", name) for k in keys])
        return json.dumps(selected, sort_keys=True)

    return values


def pretrained(wildcards):
    """The pretrain variant a refinement starts from."""
    return REFINED[wildcards.refined]["pretrained"]


def pretrained_model(wildcards):
    return f"results/pretrain/{pretrained(wildcards)}/seed{wildcards.seed}/model.pt"


def pretrained_blocks(wildcards):
    return f"results/probe/{pretrained(wildcards)}/seed{wildcards.seed}/blocks.json"


def init_file(wildcards):
    """The checkpoint file a pretrain variant starts from (pretrain.variants.<v>.init), or none."""
    path = pipeline_config.init_file(PARAMS["pretrain"]["variants"][wildcards.variant])
    return [path] if path else []


def every_variant(pattern):
    """`pattern` for every pretrain variant and seed."""
    return expand(pattern, variant=VARIANTS, seed=SEEDS)


def every_refined(pattern):
    """`pattern` for every refinement and seed."""
    return expand(pattern, refined=list(REFINED), seed=SEEDS)


def gpus(stage):
    """GPUs of one job: none on the CPU or for prepare and report, runtime.nproc for the stages that run under
    torchrun (they read that key), one otherwise. profiles/default caps the sum (one GPU job at a time locally);
    on SLURM each job asks for this many."""
    if PARAMS["runtime"]["device"] == "cpu" or stage in ("prepare", "report"):
        return 0
    return PARAMS["runtime"]["nproc"] if "runtime.nproc" in stage_params_keys(f"pipeline.stages.{stage}") else 1


def caption(name):
    """The caption file of a report figure or table (read by `snakemake --report`, relative to rules/report.smk, which names it)."""
    return f"captions/{name}.rst"
