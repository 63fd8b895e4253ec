# The DAG of pipeline/dag.py for Snakemake: prepare -> pretrain[variant] -> probe[variant] -> report.
# dvc.yaml is generated from the same specs; tests/dag checks both stay in parity.
# Run: snakemake --cores all    (then `dvc commit -f` so DVC records the hashes; see README)


include: "rules/common.smk"


rule all:
    input:
        all_targets(),


rule prepare:
    input:
        stage_inputs("prepare"),
    output:
        stage_outputs("prepare"),
    params:
        values=stage_params("prepare"),
    log:
        "logs/prepare.log",
    threads: THREADS
    conda:
        CONDA_ENV
    shell:
        stage_shell("prepare")


rule pretrain:
    input:
        stage_inputs("pretrain"),
    output:
        stage_outputs("pretrain"),
    params:
        values=stage_params("pretrain"),
    log:
        "logs/pretrain/{variant}.log",
    threads: THREADS
    resources:
        gpu=1 if PARAMS["runtime"]["device"] != "cpu" else 0,
    conda:
        CONDA_ENV
    shell:
        stage_shell("pretrain")


rule probe:
    input:
        stage_inputs("probe"),
    output:
        stage_outputs("probe"),
    params:
        values=stage_params("probe"),
    log:
        "logs/probe/{variant}.log",
    threads: THREADS
    resources:
        gpu=1 if PARAMS["runtime"]["device"] != "cpu" else 0,
    conda:
        CONDA_ENV
    shell:
        stage_shell("probe")


rule analyze:
    input:
        stage_inputs("analyze"),
    output:
        stage_outputs("analyze"),
    params:
        values=stage_params("analyze"),
    log:
        "logs/analyze/{variant}.log",
    threads: THREADS
    resources:
        gpu=1 if PARAMS["runtime"]["device"] != "cpu" else 0,
    conda:
        CONDA_ENV
    shell:
        stage_shell("analyze")


rule evaluate:
    input:
        stage_inputs("evaluate"),
    output:
        stage_outputs("evaluate"),
    params:
        values=stage_params("evaluate"),
    log:
        "logs/evaluate/{variant}.log",
    threads: THREADS
    resources:
        gpu=1 if PARAMS["runtime"]["device"] != "cpu" else 0,
    conda:
        CONDA_ENV
    shell:
        stage_shell("evaluate")


rule baselines:
    input:
        stage_inputs("baselines"),
    output:
        stage_outputs("baselines"),
    params:
        values=stage_params("baselines"),
    log:
        "logs/baselines.log",
    threads: THREADS
    resources:
        gpu=1 if PARAMS["runtime"]["device"] != "cpu" else 0,
    conda:
        CONDA_ENV
    shell:
        stage_shell("baselines")


rule report:
    input:
        stage_inputs("report"),
    output:
        stage_outputs("report"),
    params:
        values=stage_params("report"),
    log:
        "logs/report.log",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_shell("report")
