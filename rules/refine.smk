rule refine:
    """MIM-Refiner: ID heads from the probed block to the last, then the objective (NNA by default) on the
    pretrained encoder of the refinement's `pretrained` variant."""
    input:
        code=code("refine"),
        arrays=f"{DATA}/arrays.npz",
        card=f"{DATA}/card.json",
        model=pretrained_model,
        blocks=pretrained_blocks,
    output:
        model="results/refine/{refined}/seed{seed}/model.pt",
        curve="results/plots/refine_curve/{refined}/seed{seed}.csv",
        metrics="results/refine/{refined}/seed{seed}/metrics.json",
    params:
        values=params_of("refine"),
        data=subpath(input.arrays, parent=True),
        out=subpath(output.metrics, parent=True),
    log:
        "logs/refine/{refined}/seed{seed}.log",
    threads: THREADS
    resources:
        gpu=gpus("refine"),
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.stages.refine --variant {wildcards.refined} --seed {wildcards.seed} "
        "--data {params.data} --model {input.model} --probe {input.blocks} --out {params.out} "
        "--plots results/plots > {log} 2>&1"
