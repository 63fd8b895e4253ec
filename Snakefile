# The DAG of pipeline/dag.py for Snakemake: one rule per stage spec, so the rules cannot drift from dvc.yaml
# (which is generated from the same specs; tests/dag checks the two stay in parity).
#   prepare -> pretrain[variant] -> probe[variant] -> refine[variant] -> probe_refined / evaluate_refined
#                                -> analyze[variant], evaluate[variant];  baselines;  all -> report
# Every per-variant job runs once per training seed (params `seeds`, the {seed} wildcard).
# Run: snakemake --cores all    (then `dvc commit -f && snakemake --touch --cores 1`, or `make run`; see README)


include: "rules/common.smk"


rule all:
    input:
        all_targets(),


for stage_name in STAGES:

    rule:
        name:
            stage_name
        input:
            stage_inputs(stage_name),
        output:
            stage_outputs(stage_name),
        params:
            values=stage_params(stage_name),
            cmd=stage_command(stage_name),
        log:
            stage_log(stage_name),
        threads: THREADS
        resources:
            gpu=stage_gpus(stage_name),
        conda:
            CONDA_ENV
        shell:
            # the command travels in params: a shell string would be read after the loop (late binding)
            "{params.cmd} > {log} 2>&1"
