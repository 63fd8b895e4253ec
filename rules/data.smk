rule prepare:
    """The dataset as uint8 arrays with a val split held out of train, the fixed few-shot splits and a data card."""
    input:
        code=code("prepare"),
    output:
        arrays=f"{DATA}/arrays.npz",
        fewshot=f"{DATA}/fewshot.json",
        card=f"{DATA}/card.json",
    params:
        values=params_of("prepare"),
        out=subpath(output.card, parent=True),
    log:
        "logs/prepare.log",
    threads: THREADS
    resources:
        gpu=gpus("prepare"),
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.stages.prepare --out {params.out} > {log} 2>&1"
