rule report:
    """The comparison table (every metric as mean, std and n over seeds, with the refinement's deltas and their
    standard errors), the figures, and the headline metrics file that `dvc metrics diff` reads."""
    input:
        code=code("report"),
        pretrain=every_variant("results/pretrain/{variant}/seed{seed}/metrics.json"),
        probe=every_variant("results/probe/{variant}/seed{seed}/blocks.json"),
        reconstruct=every_variant("results/reconstruct/{variant}/seed{seed}/blocks.json"),
        frequency=every_variant("results/analyze/{variant}/seed{seed}/frequency.csv"),
        frequency_summary=every_variant("results/analyze/{variant}/seed{seed}/frequency.json"),
        hessian=every_variant("results/analyze/{variant}/seed{seed}/hessian.json"),
        evaluate=every_variant("results/evaluate/{variant}/seed{seed}/metrics.json"),
        evaluate_details=every_variant("results/evaluate/{variant}/seed{seed}/details.json"),
        spectrum=every_variant("results/plots/spectrum/{variant}/seed{seed}.csv"),
        probe_refined=every_refined("results/probe/{refined}/seed{seed}/blocks.json"),
        evaluate_refined=every_refined("results/evaluate/{refined}/seed{seed}/metrics.json"),
        evaluate_refined_details=every_refined("results/evaluate/{refined}/seed{seed}/details.json"),
        refine=every_refined("results/refine/{refined}/seed{seed}/metrics.json"),
        spectrum_refined=every_refined("results/plots/spectrum/{refined}/seed{seed}.csv"),
        refine_curve=every_refined("results/plots/refine_curve/{refined}/seed{seed}.csv"),
        baselines="results/evaluate/baselines/metrics.json",
        baselines_details="results/evaluate/baselines/details.json",
        spectrum_random="results/plots/spectrum/random-init.csv",
        spectrum_pixels="results/plots/spectrum/pixels.csv",
    output:
        table=report("results/report/summary.csv", category="table", caption=caption("summary")),
        summary="results/report/summary.md",
        knn_blocks=report("results/report/knn_blocks.png", category="figures", caption=caption("knn_blocks")),
        frequency=report("results/report/frequency.png", category="figures", caption=caption("frequency")),
        fusion_weights=report(
            "results/report/fusion_weights.png", category="figures", caption=caption("fusion_weights")
        ),
        knn_relative=report("results/report/knn_relative.png", category="figures", caption=caption("knn_relative")),
        refine_gain=report("results/report/refine_gain.png", category="figures", caption=caption("refine_gain")),
        recon_regimes=report(
            "results/report/recon_regimes.png", category="figures", caption=caption("recon_regimes")
        ),
        fewshot=report("results/report/fewshot.png", category="figures", caption=caption("fewshot")),
        spectrum=report("results/report/spectrum.png", category="figures", caption=caption("spectrum")),
        negatives=report(
            "results/report/negatives_top_share.png", category="figures", caption=caption("negatives_top_share")
        ),
        all_metrics="results/report/all_metrics.json",
        metrics="results/report/metrics.json",
    params:
        values=params_of("report"),
        out=subpath(output.metrics, parent=True),
    log:
        "logs/report.log",
    threads: THREADS
    resources:
        gpu=gpus("report"),
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.stages.report --probe results/probe --pretrain results/pretrain "
        "--analyze results/analyze --reconstruct results/reconstruct --evaluate results/evaluate --refine results/refine --plots results/plots "
        "--out {params.out} > {log} 2>&1"
