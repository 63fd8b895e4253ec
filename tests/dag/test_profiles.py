"""The params profiles a user switches to with one command: each validates and both tools plan the same jobs."""
from __future__ import annotations

import shutil
import sys

import pytest
import yaml

from tests.conftest import REPO, RULES, copy_project, write_dvc_yaml
from tests.dag.test_e2e import snakemake_planned
from tests.dag.test_parity import dvc_stages, tool


@pytest.mark.parametrize("profile, refinements", [("ablations", 8), ("cpu-long", 2), ("gpu", 5), ("scaling", 3),
                                                  ("fusion", 0)])
def test_profile__switch_then_both_tools_plan_every_stage(tmp_path, profile, refinements):
    """`make profile P=<name>` (switch + rewrite dvc.yaml) plans the same jobs in Snakemake and DVC."""
    root = copy_project(tmp_path)
    shutil.copytree(REPO / "profiles", root / "profiles")
    tool([sys.executable, "-m", "pipeline.config", "switch", f"profiles/{profile}/params.yaml"], root)
    write_dvc_yaml(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert len(params["refine"]["variants"]) == refinements
    seeds, variants = len(params["seeds"]), len(params["pretrain"]["variants"])
    planned = snakemake_planned(root)
    for name, (per, _) in RULES.items():
        assert planned.get(name, 0) == {"variant": variants * seeds, "refined": refinements * seeds, "": 1}[per], name
    tool(["git", "init", "-q"], root)
    tool(["dvc", "init", "-q"], root)
    assert len(dvc_stages(root)) == sum(planned.values())


def test_profile__imagenet_refine_plans_the_official_mae_with_its_file_as_a_dependency(tmp_path):
    """imagenet, then imagenet-refine: one imported MAE (a fabricated file of the official layout at its `init`),
    probed, refined once, evaluated on the full train split; both tools plan the same jobs and both make the file a
    dep of pretrain[mae]."""
    import torch

    from tests.dag.test_parity import snakemake_jobs
    from tests.models.test_checkpoint_import import official_mae_layout, tiny_mae

    root = copy_project(tmp_path)
    shutil.copytree(REPO / "profiles", root / "profiles")
    for profile in ("imagenet", "imagenet-refine"):
        tool([sys.executable, "-m", "pipeline.config", "switch", f"profiles/{profile}/params.yaml"], root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    init = params["pretrain"]["variants"]["mae"]["init"]
    assert list(params["pretrain"]["variants"]) == ["mae"] and params["pretrain"]["variants"]["mae"]["epochs"] == 0
    (root / init).parent.mkdir(parents=True)
    torch.save(official_mae_layout(tiny_mae(seed=0)), root / init)  # the layout; snakemake -n reads no weights
    write_dvc_yaml(root)
    planned = snakemake_planned(root)
    for name in RULES:
        assert planned[name] == 1, name  # one variant, one refinement, one seed
    tool(["git", "init", "-q"], root)
    tool(["dvc", "init", "-q"], root)
    dvc, smk = dvc_stages(root), snakemake_jobs(root)
    assert set(dvc) == set(smk)
    (cmd,) = [c for c, s in dvc.items() if s["name"].startswith("pretrain")]
    assert dvc[cmd]["name"] == "pretrain@mae-0"  # one variant: its entry keeps the rule's name
    assert init in dvc[cmd]["deps"] and init in smk[cmd]["deps"]
    assert dvc[cmd]["deps"] == smk[cmd]["deps"]
    # evaluated as published: the whole train folder, Resize 256 then CenterCrop 224, the refined model included
    assert params["evaluate"]["train_split"] == "full" and (params["data"]["resize"], params["data"]["image_size"]) \
        == (256, 224)
    evaluations = [s for s in dvc.values() if s["name"].startswith("evaluate")]
    assert len(evaluations) == 2 and all({"data.root", "data.resize", "evaluate"} <= set(s["params"])
                                         for s in evaluations)
