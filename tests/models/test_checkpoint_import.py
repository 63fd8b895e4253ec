"""Starting a pretrain variant from a checkpoint: every accepted format maps onto the encoder (and decoder) with the
source model's features, and a wrong or broken file stops the stage with one line and nothing written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from pipeline.config import validate
from pipeline.errors import CheckpointError, ConfigError
from pipeline.models.mae import MaskedAutoencoder
from pipeline.models.vit import ViTEncoder
from pipeline.train.checkpoint import load_encoder, save_checkpoint
from pipeline.train.checkpoint_formats import import_weights
from tests.conftest import run_stage, tiny_params, write_params
from tests.stages.conftest import PRETRAIN, error_lines, work  # noqa: F401  (work is a fixture)

# the tiny params' model on 8x8 digits: 2x2 patches, width 32, 3 blocks, 2 heads; decoder 32 x 1 block x 2 heads
DIMS = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=3, num_heads=2)


def tiny_mae(seed: int, decoder_dim: int = 32, **dims) -> MaskedAutoencoder:
    torch.manual_seed(seed)
    return MaskedAutoencoder(ViTEncoder(**{**DIMS, **dims}), decoder_dim, 1, 2).eval()


def official_mae_layout(model: MaskedAutoencoder) -> dict:
    """MAE's released .pth layout: {'model': state_dict} with the encoder's keys at the top level (timm names) and
    the decoder's under their official names."""
    state = {k.removeprefix("encoder."): v for k, v in model.state_dict().items()}
    return {"model": state, "epoch": 799}  # the official files also carry the epoch (an int: weights_only loads it)


def timm_source(seed: int) -> VisionTransformer:
    """A timm ViT classifier of the tiny dims, with its own (learned, random) position table and a head."""
    torch.manual_seed(seed)
    return VisionTransformer(**DIMS, num_classes=10, global_pool="token").eval()


def write_format(fmt: str, path: Path, seed: int = 1) -> tuple[Path, object]:
    """Write a checkpoint of format `fmt` under `path`; return the file and the source model."""
    if fmt == "mae_pth":
        src = tiny_mae(seed)
        torch.save(official_mae_layout(src), path / "mae.pth")
        return path / "mae.pth", src
    if fmt == "pipeline_model_pt":
        src = tiny_mae(seed)
        save_checkpoint(path / "model.pt", {"arch": dict(src.encoder.arch), "variant": "mae", "fuse_blocks": [],
                                            "encoder": src.encoder.state_dict(), "model": src.state_dict()})
        return path / "model.pt", src
    src = timm_source(seed)
    if fmt == "timm_pth":
        torch.save(src.state_dict(), path / "vit.pth")
        return path / "vit.pth", src
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path / "vit.safetensors"))
    return path / "vit.safetensors", src


def source_tokens(src, x: torch.Tensor) -> list[torch.Tensor]:
    enc = src.encoder if isinstance(src, MaskedAutoencoder) else src
    final, blocks = enc.forward_intermediates(x, output_fmt="NLC")
    return [final, *blocks]


@pytest.mark.parametrize("fmt", ["mae_pth", "pipeline_model_pt", "timm_pth", "safetensors"])
def test_import_weights__features_equal_the_source_model(tmp_path, fmt):
    """Every block's output and the final normed tokens are the source model's, bit for bit."""
    path, src = write_format(fmt, tmp_path)
    model = tiny_mae(seed=7)
    loaded = import_weights(model, str(path))
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        for ours, theirs in zip(source_tokens(model, x), source_tokens(src, x), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # a MAE-layout or pipeline file carries the decoder, which fits model.decoder_*; a timm classifier has none
    assert loaded["decoder"] is (fmt in ("mae_pth", "pipeline_model_pt"))
    if loaded["decoder"]:
        torch.testing.assert_close(model.decoder_pred.weight, src.decoder_pred.weight, rtol=0, atol=0)


def test_import_weights__a_decoder_of_other_dims_is_ignored_and_the_encoder_still_loads(tmp_path):
    path, src = write_format("mae_pth", tmp_path)
    model, fresh = tiny_mae(seed=7, decoder_dim=16), tiny_mae(seed=7, decoder_dim=16)
    assert import_weights(model, str(path))["decoder"] is False
    torch.testing.assert_close(model.decoder_pred.weight, fresh.decoder_pred.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.encoder.state_dict(), src.encoder.state_dict(), rtol=0, atol=0)


@pytest.mark.parametrize("fmt", ["mae_pth", "timm_pth", "safetensors", "pipeline_model_pt"])
def test_import_weights__wrong_architecture_names_the_file(tmp_path, fmt):
    path, _ = write_format(fmt, tmp_path)
    with pytest.raises(CheckpointError, match=rf"{path.name}.*does not fit the model architecture"):
        import_weights(tiny_mae(seed=7, embed_dim=16), str(path))  # width 16 where the file has 32
    with pytest.raises(CheckpointError, match=r"missing \['blocks\.3"):
        import_weights(tiny_mae(seed=7, depth=4), str(path))


@pytest.mark.parametrize("fmt", ["mae_pth", "safetensors"])
def test_import_weights__truncated_file_is_one_checkpoint_error(tmp_path, fmt):
    path, _ = write_format(fmt, tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"{path.name}: corrupt or truncated"):
        import_weights(tiny_mae(seed=7), str(path))


def test_import_weights__timm_name_resolves_in_the_local_cache_only(tmp_path, monkeypatch):
    """`timm:<name>` reads the hub file from the local Hugging Face cache; an uncached name is one clear error."""
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    name = "vit_base_patch16_224.mae"  # timm's id timm/<name>; the fabricated file holds the tiny dims
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        import_weights(tiny_mae(seed=7), f"timm:{name}")
    with pytest.raises(CheckpointError, match="Invalid pretrained tag"):
        import_weights(tiny_mae(seed=7), "timm:vit_base_patch16_224.no_such_tag")
    repo = tmp_path / "hub" / f"models--timm--{name}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    _, src = write_format("safetensors", repo / "snapshots" / ("0" * 40))
    (repo / "snapshots" / ("0" * 40) / "vit.safetensors").rename(repo / "snapshots" / ("0" * 40) / "model.safetensors")
    model = tiny_mae(seed=7)
    assert import_weights(model, f"timm:{name}")["format"] == "safetensors"
    torch.testing.assert_close(model.encoder.state_dict(), {k: v for k, v in src.state_dict().items()
                                                            if not k.startswith("head.")}, rtol=0, atol=0)


def test_config__epochs_override_needs_init_at_zero_and_exceeds_warmup():
    p = tiny_params()
    p["pretrain"]["variants"]["mae"]["epochs"] = 0
    with pytest.raises(ConfigError, match="pretrain.variants.mae.epochs=0 without init"):
        validate(p)
    p["pretrain"]["variants"]["mae"]["init"] = "checkpoints/mae.pth"
    validate(p)  # the imported model as is; mff keeps pretrain.epochs
    p["pretrain"]["variants"]["mae"]["epochs"] = 1  # tiny params: warmup_epochs 1
    with pytest.raises(ConfigError, match="must exceed pretrain.warmup_epochs=1"):
        validate(p)


def test_pretrain_stage__epochs_0_writes_the_imported_model(work):
    """The stage with init + epochs 0 trains nothing: its model.pt holds the file's encoder and decoder."""
    (work / "checkpoints").mkdir()
    path, src = write_format("mae_pth", work / "checkpoints")
    params = json.loads(json.dumps(tiny_params()))
    params["pretrain"]["variants"]["mae"].update(init="checkpoints/mae.pth", epochs=0)
    write_params(work / "params.yaml", params)
    run_stage("pretrain", PRETRAIN, work)
    encoder, ckpt = load_encoder(work / "results/pretrain/mae/model.pt")
    torch.testing.assert_close(encoder.state_dict(), src.encoder.state_dict(), rtol=0, atol=0)
    torch.testing.assert_close(ckpt["model"]["decoder_pred.weight"], src.decoder_pred.weight, rtol=0, atol=0)
    metrics = json.loads((work / "results/pretrain/mae/metrics.json").read_text())
    assert metrics["epochs"] == 0 and metrics["steps"] == 0 and metrics["loss"] is None
    assert metrics["init"] == {"init": "checkpoints/mae.pth", "file": "checkpoints/mae.pth", "format": "MAE .pth",
                               "decoder": True}
    # re-imported, the pipeline's own model.pt gives the same encoder again, bit for bit
    params["pretrain"]["variants"]["mff"].update(init="results/pretrain/mae/model.pt", epochs=0)
    write_params(work / "params.yaml", params)
    run_stage("pretrain", [a.replace("mae", "mff") for a in PRETRAIN], work)
    again, _ = load_encoder(work / "results/pretrain/mff/model.pt")
    torch.testing.assert_close(again.state_dict(), src.encoder.state_dict(), rtol=0, atol=0)


@pytest.mark.parametrize("broken", ["wrong_architecture", "truncated"])
def test_pretrain_stage__bad_init_file_is_one_line_exit_2_and_nothing_written(work, broken):
    (work / "checkpoints").mkdir()
    if broken == "wrong_architecture":
        torch.save(official_mae_layout(tiny_mae(seed=1, embed_dim=16)), work / "checkpoints/mae.pth")
    else:
        write_format("mae_pth", work / "checkpoints")
        data = (work / "checkpoints/mae.pth").read_bytes()
        (work / "checkpoints/mae.pth").write_bytes(data[: len(data) // 3])
    params = tiny_params()
    params["pretrain"]["variants"]["mae"].update(init="checkpoints/mae.pth", epochs=0)
    write_params(work / "params.yaml", params)
    proc = run_stage("pretrain", PRETRAIN, work, check=False)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert line.startswith("error: checkpoints/mae.pth")
    out = work / "results/pretrain/mae"
    assert not out.exists() or sorted(p.name for p in out.iterdir()) in ([], [".lock"])
    assert not (work / "results/plots").exists()


def test_dvc_yaml__a_file_init_gets_its_own_entry_with_the_file_as_a_dep(tmp_path):
    """DVC: the file is a dep of its variant's entry only; a timm name is a params value, not a file dep."""
    from tests.conftest import copy_project, write_dvc_yaml

    root = copy_project(tmp_path)
    p = tiny_params()
    p["pretrain"]["variants"]["mae"]["init"] = "checkpoints/mae.pth"
    p["pretrain"]["variants"]["mff"]["init"] = "timm:vit_base_patch16_224.mae"
    write_params(root / "params.yaml", p)
    (root / "checkpoints").mkdir()
    (root / "checkpoints/mae.pth").write_bytes(b"")  # the dry run that writes dvc.yaml reads no weights
    write_dvc_yaml(root)
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert stages["pretrain"]["foreach"] == {"mff-0": {"variant": "mff", "seed": "0"}}
    assert stages["pretrain-mae"]["foreach"] == {"mae-0": {"variant": "mae", "seed": "0"}}
    assert "checkpoints/mae.pth" in stages["pretrain-mae"]["do"]["deps"]
    assert not any(d.startswith("checkpoints") for d in stages["pretrain"]["do"]["deps"])
    del p["pretrain"]["variants"]["mae"]["init"]  # no file: the one matrix over the variants dict
    write_params(root / "params.yaml", p)
    write_dvc_yaml(root)
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert stages["pretrain"]["matrix"] == {"variant": "${pretrain.variants}", "seed": "${seeds}"}
    assert "pretrain-mae" not in stages
