"""One end-to-end run of the DAG under both tools, on tiny digits in a fresh git + DVC repo.

Covers what users rely on between the two tools: a full Snakemake run, the bridge commands (`dvc commit -f`
after Snakemake, `snakemake --touch` after DVC), exact reruns (nothing changed -> nothing runs; one probe key
changed -> only the probes and what reads them), a forced rerun that reproduces the same bytes, and metric and
params diffs across two commits.
"""
from __future__ import annotations

import json
import re
import sys

import pytest
import yaml

from pipeline.dvc_yaml import snakemake_jobs
from tests.conftest import copy_project, tiny_params, write_dvc_yaml, write_params
from tests.dag.test_parity import tool

# three refinements of two sources (each objective's step has its own tests in tests/models and tests/objectives)
REFINED = ["mae_nna", "mff_nna", "mae_mochi"]


def snakemake_planned(root) -> dict[str, int]:
    """Rule -> job count that `snakemake -n` would run (empty when nothing is to be done)."""
    out = tool(["snakemake", "-n", "--cores", "2"], root).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.M) if m[0] != "all"}


def dvc_stale(root) -> set[str]:
    return set(json.loads(tool(["dvc", "status", "--json"], root).stdout))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("e2e"))
    params = tiny_params()
    params["refine"]["variants"] = {name: params["refine"]["variants"][name] for name in REFINED}
    write_params(root / "params.yaml", params)
    write_dvc_yaml(root)
    tool(["git", "init", "-q"], root)
    tool(["git", "config", "user.email", "ci@example.invalid"], root)
    tool(["git", "config", "user.name", "ci"], root)
    tool(["dvc", "init", "-q"], root)
    tool(["git", "add", "-A"], root)
    tool(["git", "commit", "-qm", "tiny project"], root)
    return root


def test_e2e__both_tools_agree_from_first_run_to_metric_diff(project):
    root = project
    tool(["snakemake", "--cores", "2"], root)
    # one list of file names: the stages wrote exactly the outputs the rules declare (gitignored working files of
    # a running stage aside: DVCLive's live/ logs, resume checkpoints, locks and temporary names)
    declared = {out for job in snakemake_jobs(root) for out in job.outs}
    written = {str(p.relative_to(root)) for p in (root / "results").rglob("*") if p.is_file()
               and "live" not in p.parts and not p.name.startswith(("resume", ".tmp-", ".lock"))}
    assert written == declared, (written ^ declared)
    summary = (root / "results/report/summary.csv").read_text()
    header = summary.splitlines()[0].split(",")
    assert header[:3] == ["model", "knn_cls", "knn_mean_patch"]
    # means under the metric's name, then n (seeds) and the std over seeds (blank with the default one seed)
    assert {"linear", "fewshot_1", "fewshot_2", "kmeans_acc", "n", "knn_cls_std"} <= set(header)
    assert [line.split(",")[0] for line in summary.splitlines()[1:]] == [
        "mae", "mff", *REFINED, "random-init", "pixels"]
    assert {"rankme_raw", "rankme_centred", "rankme_standardized", "hard_rank_centred", "alignment", "uniformity",
            "objective", "embedding_rankme_raw", "amplitude_f0_last", "amplitude_fmax_last",
            "refine_neg_top1_share"} <= set(summary.splitlines()[0].split(","))
    headline = json.loads((root / "results/report/metrics.json").read_text())
    assert set(headline) == {"mae", "mff", *REFINED, "random-init", "pixels"}
    assert all(isinstance(v, (int, float)) for m in headline.values() for v in m.values())
    assert {"knn_cls", "linear", "fewshot_1", "val_knn_best", "finetune"} <= set(headline["mae"])
    full = json.loads((root / "results/report/all_metrics.json").read_text())
    assert {"test_size", "val_size", "fewshot_1_split_se", "kmeans_nmi", "n"} <= set(full["mae_nna"])
    assert (root / "results/report/knn_blocks.png").stat().st_size > 10_000
    assert (root / "results/report/spectrum.png").stat().st_size > 10_000
    assert (root / "results/report/negatives_top_share.png").stat().st_size > 10_000
    tool(["snakemake", "--report", "report.html"], root)
    html = (root / "report.html").read_text(errors="replace")
    assert all(name in html for name in ("knn_blocks.png", "fewshot.png", "summary.csv"))
    (root / "report.html").unlink()

    # nothing changed -> nothing runs, in both tools, once DVC has recorded Snakemake's outputs (make run's bridge:
    # the commit relinks DVC-cached outputs with new mtimes, and the touch makes Snakemake take them as they are)
    assert snakemake_planned(root) == {}
    tool(["dvc", "commit", "-f", "-q"], root)
    tool(["snakemake", "--touch", "--cores", "1"], root)
    assert snakemake_planned(root) == {} and dvc_stale(root) == set()
    tool(["git", "add", "-A"], root)
    tool(["git", "commit", "-qm", "run k=20"], root)

    # one probe key changed -> only the stages that read it (the probes, the random-init floor in baselines) and
    # the report that reads their outputs rerun
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["probe"]["bank_limit"] = 500
    write_params(root / "params.yaml", params)
    probes = {"probe@mae-0", "probe@mff-0", *(f"probe_refined@{r}-0" for r in REFINED)}
    assert dvc_stale(root) == probes | {"baselines"}
    # Snakemake also plans the refinements: they read the probe's blocks.json, which it will rewrite
    assert snakemake_planned(root) == {"probe": 2, "probe_refined": 3, "baselines": 1, "refine": 3,
                                       "evaluate_refined": 3, "report": 1}
    repro = tool(["dvc", "repro"], root).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", repro))
    assert probes | {"baselines", "report"} <= ran
    assert not ran & {"prepare", "pretrain@mae-0", "pretrain@mff-0", "evaluate@mae-0", "analyze@mae-0"}
    tool(["snakemake", "--touch", "--cores", "1"], root)
    assert snakemake_planned(root) == {} and dvc_stale(root) == set()

    tool(["git", "add", "-A"], root)
    tool(["git", "commit", "-qm", "k=1"], root)
    params_diff = json.loads(tool(["dvc", "params", "diff", "HEAD~1", "HEAD", "--json"], root).stdout)
    assert params_diff["params.yaml"]["probe.bank_limit"] == {"old": 0, "new": 500, "diff": 500}
    metrics_diff = json.loads(tool(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"], root).stdout)
    # one DVC metrics file, the report's headline table: the per-stage JSONs are plain outputs
    assert set(metrics_diff) == {"results/report/metrics.json"}
    assert "mae.val_knn_best" in metrics_diff["results/report/metrics.json"]
    plots = json.loads(tool(["dvc", "plots", "diff", "HEAD~1", "HEAD", "--json"], root).stdout)
    # one chart per quantity with every declared model file in it, the two commits overlaid (the live DVCLive charts
    # are left out: their gitignored files are in no commit)
    declared = {k: v for e in yaml.safe_load((root / "dvc.yaml").read_text())["plots"] if isinstance(e, dict)
                for k, v in e.items()}
    assert {"knn_cls_per_block", "refine_monitor", "spectrum", "results/report/knn_blocks.png"} <= set(plots["data"])
    for plot_id in ("knn_cls_per_block", "knn_mean_patch_per_block", "pretrain_loss", "refine_loss", "spectrum"):
        (chart,) = plots["data"][plot_id]
        assert chart["revisions"] == ["HEAD~1", "HEAD"], plot_id
        values = chart["content"]["data"]["values"]
        for rev in ("HEAD~1", "HEAD"):
            assert len({v.get("filename") for v in values if v["rev"] == rev}) == len(declared[plot_id]["y"]), plot_id

    # a forced rerun of a training stage writes the same bytes: DVC finds nothing modified
    tool(["dvc", "repro", "-f", "-s", "pretrain@mae-0"], root)
    assert dvc_stale(root) == set()

    # a new params key (schema and params.yaml) read by one stage reruns that stage and what reads its outputs,
    # in both tools: the schema is not a dependency of every stage
    schema = root / "pipeline/params.schema.yaml"
    text = schema.read_text()
    anchor = "      images: {$ref: \"#/$defs/posint\", description: validation images for the per-block Fourier analysis}\n"
    assert anchor in text
    schema.write_text(text.replace(anchor, anchor + "      note: {type: integer}\n"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["analyze"]["note"] = 1
    write_params(root / "params.yaml", params)
    assert dvc_stale(root) == {"analyze@mae-0", "analyze@mff-0"}
    assert snakemake_planned(root) == {"analyze": 2, "report": 1}
    tool(["git", "checkout", "--", "pipeline/params.schema.yaml", "params.yaml"], root)
    assert snakemake_planned(root) == {} and dvc_stale(root) == set()

    # an experiment from the command line: DVC rewrites params.yaml, which must stay valid for every stage
    exp = tool(["dvc", "exp", "run", "-S", "analyze.images=50", "-n", "fewer-images"], root).stdout
    assert set(re.findall(r"Running stage '([^']+)'", exp)) == {"analyze@mae-0", "analyze@mff-0", "report"}
    tool([sys.executable, "-m", "pipeline.config", "check"], root)
    shown = json.loads(tool(["dvc", "exp", "show", "--json"], root).stdout)
    assert "fewer-images" in json.dumps(shown)
