# MIM refinement pipeline: the DAG's source of truth (dvc.yaml is written from these rules: `make dvc.yaml`).
#   prepare -> pretrain[variant] -> probe[variant] -> refine[refined] -> probe_refined, evaluate_refined
#                                -> analyze[variant], evaluate[variant];   baselines;   all -> report
# Every per-model job runs once per training seed (params `seeds`, the {seed} wildcard).
# Run: snakemake --cores all   (or `make run`, which also records the run for DVC: see README)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/probe.smk"
include: "rules/refine.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    input:
        rules.report.output,
