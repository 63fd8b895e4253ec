rule pretrain:
    """MAE, or MFF-MAE when the variant fuses blocks, from scratch or from its `init` checkpoint."""
    input:
        code=code("pretrain"),
        arrays=f"{DATA}/arrays.npz",
        card=f"{DATA}/card.json",
        init=init_file,
    output:
        model="results/pretrain/{variant}/seed{seed}/model.pt",
        curve="results/plots/pretrain_curve/{variant}/seed{seed}.csv",
        metrics="results/pretrain/{variant}/seed{seed}/metrics.json",
    params:
        values=params_of("pretrain"),
        data=subpath(input.arrays, parent=True),
        out=subpath(output.metrics, parent=True),
    log:
        "logs/pretrain/{variant}/seed{seed}.log",
    threads: THREADS
    resources:
        gpu=gpus("pretrain"),
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.stages.pretrain --variant {wildcards.variant} --seed {wildcards.seed} "
        "--data {params.data} --out {params.out} --plots results/plots > {log} 2>&1"
