rule analyze:
    """The feature frequency amplitude per block of a pretrained encoder, and the sharpness (top Hessian
    eigenvalue) of its pretraining loss."""
    input:
        code=code("analyze"),
        arrays=f"{DATA}/arrays.npz",
        card=f"{DATA}/card.json",
        model="results/pretrain/{variant}/seed{seed}/model.pt",
    output:
        frequency="results/analyze/{variant}/seed{seed}/frequency.csv",
        summary="results/analyze/{variant}/seed{seed}/frequency.json",
        hessian="results/analyze/{variant}/seed{seed}/hessian.json",
    params:
        values=params_of("analyze"),
        data=subpath(input.arrays, parent=True),
        out=subpath(output.summary, parent=True),
    log:
        "logs/analyze/{variant}/seed{seed}.log",
    threads: THREADS
    resources:
        gpu=gpus("analyze"),
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.stages.analyze --variant {wildcards.variant} --seed {wildcards.seed} "
        "--data {params.data} --model {input.model} --out {params.out} > {log} 2>&1"


rule evaluate:
    """k-NN, linear probe, few-shot, fine-tune, k-means and collapse of a pretrained encoder on test."""
    input:
        code=code("evaluate"),
        arrays=f"{DATA}/arrays.npz",
        card=f"{DATA}/card.json",
        fewshot=f"{DATA}/fewshot.json",
        model="results/pretrain/{variant}/seed{seed}/model.pt",
    output:
        details="results/evaluate/{variant}/seed{seed}/details.json",
        spectrum="results/plots/spectrum/{variant}/seed{seed}.csv",
        metrics="results/evaluate/{variant}/seed{seed}/metrics.json",
    params:
        values=params_of("evaluate"),
        data=subpath(input.arrays, parent=True),
        out=subpath(output.metrics, parent=True),
    log:
        "logs/evaluate/{variant}/seed{seed}.log",
    threads: THREADS
    resources:
        gpu=gpus("evaluate"),
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.stages.evaluate --variant {wildcards.variant} --seed {wildcards.seed} "
        "--data {params.data} --model {input.model} --out {params.out} --plots results/plots > {log} 2>&1"


rule evaluate_refined:
    """The same protocols on a refined encoder (the evaluate stage's module); --pretrained gives the cut-only
    control when refine.depth cut the encoder."""
    input:
        code=code("evaluate"),
        arrays=f"{DATA}/arrays.npz",
        card=f"{DATA}/card.json",
        fewshot=f"{DATA}/fewshot.json",
        model="results/refine/{refined}/seed{seed}/model.pt",
        pretrained=pretrained_model,
    output:
        details="results/evaluate/{refined}/seed{seed}/details.json",
        spectrum="results/plots/spectrum/{refined}/seed{seed}.csv",
        metrics="results/evaluate/{refined}/seed{seed}/metrics.json",
    params:
        values=params_of("evaluate"),
        data=subpath(input.arrays, parent=True),
        out=subpath(output.metrics, parent=True),
    log:
        "logs/evaluate_refined/{refined}/seed{seed}.log",
    threads: THREADS
    resources:
        gpu=gpus("evaluate"),
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.stages.evaluate --variant {wildcards.refined} --seed {wildcards.seed} "
        "--data {params.data} --model {input.model} --pretrained {input.pretrained} --out {params.out} "
        "--plots results/plots > {log} 2>&1"


rule baselines:
    """The controls, once per data seed: a random-init encoder and raw pixels under the same protocols."""
    input:
        code=code("baselines"),
        arrays=f"{DATA}/arrays.npz",
        card=f"{DATA}/card.json",
        fewshot=f"{DATA}/fewshot.json",
    output:
        details="results/evaluate/baselines/details.json",
        knn_blocks="results/plots/knn_blocks/random-init.csv",
        spectrum_random="results/plots/spectrum/random-init.csv",
        spectrum_pixels="results/plots/spectrum/pixels.csv",
        metrics="results/evaluate/baselines/metrics.json",
    params:
        values=params_of("baselines"),
        data=subpath(input.arrays, parent=True),
        out=subpath(output.metrics, parent=True),
    log:
        "logs/baselines.log",
    threads: THREADS
    resources:
        gpu=gpus("baselines"),
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.stages.baselines --data {params.data} --out {params.out} --plots results/plots "
        "> {log} 2>&1"
