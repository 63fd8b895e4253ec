"""The reconstruct stage on the session's tiny MAE, and a pretrain variant with its own model keys."""
from __future__ import annotations

import json

import torch

from tests.conftest import run_stage, write_params
from tests.stages.conftest import PRETRAIN, error_lines

RECONSTRUCT = ["--variant", "mae", "--data", "results/data/digits", "--model", "results/pretrain/mae/model.pt",
               "--out", "results/reconstruct/mae", "--plots", "results/plots"]
OUTPUTS = ("results/reconstruct/mae/blocks.json", "results/reconstruct/mae/metrics.json",
           "results/plots/recon_blocks/mae.csv")


def test_reconstruct__one_loss_per_block_and_the_same_bytes_on_a_rerun(pretrained, params):
    run_stage("reconstruct", RECONSTRUCT, pretrained)
    blocks = json.loads((pretrained / OUTPUTS[0]).read_text())
    depth = params["model"]["depth"]
    assert [r["block"] for r in blocks["rows"]] == list(range(depth))
    assert all(r["loss"] > 0 and r["se"] > 0 for r in blocks["rows"])
    assert blocks["images"] == params["reconstruct"]["val_images"] and blocks["steps"] == params["reconstruct"]["steps"]
    first = {p: (pretrained / p).read_bytes() for p in OUTPUTS}
    run_stage("reconstruct", RECONSTRUCT, pretrained)
    assert {p: (pretrained / p).read_bytes() for p in OUTPUTS} == first


def test_pretrain__a_variant_trains_at_its_own_model_size_with_its_own_crop(work, params):
    params["pretrain"]["variants"]["mae"]["model"] = {"depth": 2, "decoder_embed_dim": 16, "decoder_num_heads": 1}
    params["pretrain"]["variants"]["mae"]["augment"] = "src"
    params["pretrain"]["epochs"] = 2
    write_params(work / "params.yaml", params)
    run_stage("pretrain", PRETRAIN, work)
    ckpt = torch.load(work / "results/pretrain/mae/model.pt", map_location="cpu", weights_only=True)
    assert ckpt["arch"]["depth"] == 2 and ckpt["arch"]["embed_dim"] == params["model"]["embed_dim"]
    assert ckpt["model"]["decoder_embed.weight"].shape[0] == 16


def test_pretrain__a_variant_model_key_that_does_not_fit_names_variant_and_key(work, params):
    params["pretrain"]["variants"]["mae"]["model"] = {"num_heads": 5}  # 5 does not divide the width 32
    write_params(work / "params.yaml", params)
    proc = run_stage("pretrain", PRETRAIN, work, check=False)
    assert proc.returncode == 2
    [line] = error_lines(proc)
    assert "pretrain.variants.mae.model.num_heads=5" in line and "model.embed_dim=32" in line
    assert not (work / "results/pretrain").exists()
