rule probe:
    """k-NN accuracy of every block on the val split; the block the refinement's heads start from."""
    input:
        code=code("probe"),
        arrays=f"{DATA}/arrays.npz",
        card=f"{DATA}/card.json",
        model="results/pretrain/{variant}/seed{seed}/model.pt",
    output:
        blocks="results/probe/{variant}/seed{seed}/blocks.json",
        curve="results/plots/knn_blocks/{variant}/seed{seed}.csv",
        metrics="results/probe/{variant}/seed{seed}/metrics.json",
    params:
        values=params_of("probe"),
        data=subpath(input.arrays, parent=True),
        out=subpath(output.metrics, parent=True),
    log:
        "logs/probe/{variant}/seed{seed}.log",
    threads: THREADS
    resources:
        gpu=gpus("probe"),
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.stages.probe --variant {wildcards.variant} --seed {wildcards.seed} "
        "--data {params.data} --model {input.model} --out {params.out} --plots results/plots > {log} 2>&1"


rule reconstruct:
    """Per-block reconstruction: a fresh decoder on each frozen block's visible tokens, scored on val."""
    input:
        code=code("reconstruct"),
        arrays=f"{DATA}/arrays.npz",
        card=f"{DATA}/card.json",
        model="results/pretrain/{variant}/seed{seed}/model.pt",
    output:
        blocks="results/reconstruct/{variant}/seed{seed}/blocks.json",
        curve="results/plots/recon_blocks/{variant}/seed{seed}.csv",
        metrics="results/reconstruct/{variant}/seed{seed}/metrics.json",
    params:
        values=params_of("reconstruct"),
        data=subpath(input.arrays, parent=True),
        out=subpath(output.metrics, parent=True),
    log:
        "logs/reconstruct/{variant}/seed{seed}.log",
    threads: THREADS
    resources:
        gpu=gpus("reconstruct"),
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.stages.reconstruct --variant {wildcards.variant} --seed {wildcards.seed} "
        "--data {params.data} --model {input.model} --out {params.out} --plots results/plots > {log} 2>&1"


rule probe_refined:
    """The same per-block k-NN on a refined encoder (the probe stage's module)."""
    input:
        code=code("probe"),
        arrays=f"{DATA}/arrays.npz",
        card=f"{DATA}/card.json",
        model="results/refine/{refined}/seed{seed}/model.pt",
    output:
        blocks="results/probe/{refined}/seed{seed}/blocks.json",
        curve="results/plots/knn_blocks/{refined}/seed{seed}.csv",
        metrics="results/probe/{refined}/seed{seed}/metrics.json",
    params:
        values=params_of("probe"),
        data=subpath(input.arrays, parent=True),
        out=subpath(output.metrics, parent=True),
    log:
        "logs/probe_refined/{refined}/seed{seed}.log",
    threads: THREADS
    resources:
        gpu=gpus("probe"),
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.stages.probe --variant {wildcards.refined} --seed {wildcards.seed} "
        "--data {params.data} --model {input.model} --out {params.out} --plots results/plots > {log} 2>&1"
