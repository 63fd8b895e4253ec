"""params.yaml validation: one clear line naming the key, and the overlay switch."""
from __future__ import annotations

import pytest
import yaml

from pipeline import config
from pipeline.errors import ConfigError
from tests.conftest import REPO, write_params


def test_load_params__repo_defaults_are_valid():
    assert config.load_params(REPO / "params.yaml")["data"]["dataset"] == "fashion_mnist"


def test_load_params__gpu_profile_overlay_is_valid(tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text((REPO / "params.yaml").read_text())
    changed = config.switch(REPO / "profiles" / "gpu" / "params.yaml", target)
    assert "model.embed_dim" in changed
    assert config.load_params(target)["runtime"]["device"] == "cuda"
    assert "# The one experiment definition" in target.read_text()  # comments survive the switch


@pytest.mark.parametrize("edit, needle", [
    (lambda p: p["probe"].update(kk=3), "unknown key 'probe.kk'"),
    (lambda p: p["pretrain"].update(mask_ratio=1.5), "pretrain.mask_ratio = 1.5"),
    (lambda p: p["pretrain"].update(mask_ratio=0.0), "pretrain.mask_ratio = 0.0"),
    (lambda p: p["pretrain"].update(blr="1e-3"), "pretrain.blr = '1e-3' is read as a string"),
    (lambda p: p["probe"].update(knn="mim-refiner"), "probe.knn = 'mim-refiner'"),
    (lambda p: p["probe"].update(select="deepest"), "probe.select = 'deepest'"),
    (lambda p: p["evaluate"].update(knn_headline="dino20"), "evaluate.knn_headline = 'dino20'"),
    (lambda p: p["evaluate"]["linear"].update(lrs=[1.0]), "evaluate.linear.lrs = [1.0]"),  # one value: no selection
    (lambda p: p["evaluate"].update(fewshot_cs=[10.0]), "evaluate.fewshot_cs = [10.0]"),
    (lambda p: p["evaluate"].update(fewshot_cs=[1.0, 1.0]), "evaluate.fewshot_cs = [1.0, 1.0]"),
    (lambda p: p["model"].update(num_heads=5), "model.embed_dim=32 is not divisible by model.num_heads=5"),
    (lambda p: p["pretrain"]["variants"]["mff"].update(fuse_blocks=[0, 1]), "end with the last block 2"),
    # a variant's own model keys: the variant and the key named, the global key when the variant inherits it
    (lambda p: p["pretrain"]["variants"]["mae"].update(model={"num_heads": 5}),
     "params: model.embed_dim=32 is not divisible by pretrain.variants.mae.model.num_heads=5"),
    (lambda p: p["pretrain"]["variants"]["mff"].update(model={"depth": 2}),
     "pretrain.variants.mff.fuse_blocks=[0, 2] must be increasing, hold at least two blocks and end with the last "
     "block 1 (pretrain.variants.mff.model.depth=2)"),
    (lambda p: p["pretrain"]["variants"]["mae"].update(model={"embed_dim": 30, "num_heads": 3}),
     "pretrain.variants.mae.model.embed_dim=30 must be a multiple of 4"),
    (lambda p: p["pretrain"]["variants"]["mae"].update(model={"patch_size": 4}),
     "unknown key 'pretrain.variants.mae.model.patch_size'"),
    (lambda p: (p["pretrain"]["variants"]["mae"].update(model={"depth": 2}), p["refine"].update(depth=3)),
     "refine.depth=3 is beyond the model's 2 blocks (pretrain.variants.mae.model.depth)"),
    (lambda p: p["data"].update(dataset="mnist"), "data.dataset = 'mnist'"),
    (lambda p: p["data"].update(resize=32, image_size=64), "data.resize=32 is below data.image_size=64"),
    (lambda p: p["refine"].update(depth=7), "refine.depth=7 is beyond the model's 3 blocks"),
    (lambda p: p["refine"].update(depth="half"), "refine.depth = 'half'"),
    (lambda p: p["refine"]["variants"]["mae_moco"].update(objective="simclr"),
     "refine.variants.mae_moco.objective = 'simclr'"),
    (lambda p: p["refine"]["variants"]["mae_nna"].update(pretrained="beit"),
     "refine.variants.mae_nna.pretrained='beit' is not a key of pretrain.variants (mae, mff)"),
    (lambda p: p["refine"]["variants"].update(mae={"pretrained": "mae", "objective": "nna"}),
     "refine.variants.mae reuses a name of pretrain.variants"),
    (lambda p: p["refine"]["mochi"].update(hardest=0), "refine.mochi.hardest = 0"),
    (lambda p: p["refine"]["variants"]["mae_nna"].update(cc_head="official"),
     "refine.variants.mae_nna.cc_head is for objective cc"),
    (lambda p: p["pretrain"]["variants"]["mae"].update(fusion_lr_scale=10.0),
     "pretrain.variants.mae.fusion_lr_scale is for a variant with learned fusion"),
    (lambda p: p["refine"].update(local_size=5), "refine.local_size=5 is not a multiple of model.patch_size=2"),
    (lambda p: p.update(seeds=[]), "seeds = []: [] should be non-empty"),
    (lambda p: p.update(seeds=[0, 1, 0]), "seeds = [0, 1, 0]: [0, 1, 0] has non-unique elements"),
    (lambda p: p.update(seeds=0), "seeds = 0: 0 is not of type 'array'"),
])
def test_load_params__bad_value_names_the_key(tmp_path, params, edit, needle):
    edit(params)
    with pytest.raises(ConfigError) as err:
        config.load_params(write_params(tmp_path / "params.yaml", params))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_load_params__float_written_1e_minus_3_is_a_string_under_pyyaml(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("blr: 8.0e-4", "blr: 15e-4")
    assert "blr: 15e-4" in text
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ConfigError, match="pretrain.blr = '15e-4' is read as a string"):
        config.load_params(tmp_path / "params.yaml")


def test_load_params__missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        config.load_params(tmp_path / "nope.yaml")


def test_check_variant__misspelled_lists_the_known(params):
    with pytest.raises(ConfigError, match=r"unknown variant 'mea' \(pretrain.variants has: mae, mff; "
                                          r"refine.variants has: mae_mochi, mae_moco, mae_nna, mae_nnclr, mff_nna\)"):
        config.check_variant(params, "mea")
    with pytest.raises(ConfigError, match=r"unknown variant 'mae_nna' \(pretrain.variants has: mae, mff\)$"):
        config.check_variant(params, "mae_nna", ("pretrain",))


def test_select__returns_only_declared_keys(params):
    out = config.select(params, ["seed", "pretrain.variants.mff", "probe.knn"])
    assert out == {"seed": 0, "pretrain": {"variants": {"mff": {"fuse_blocks": [0, 2], "fusion": "softmax"}}},
                   "probe": {"knn": "mim_refiner"}}


def test_every_float_in_params_is_a_float_in_both_yaml_versions():
    from ruamel.yaml import YAML  # YAML 1.2, as DVC reads it

    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield prefix + k, v

    for path in (REPO / "params.yaml", REPO / "profiles" / "gpu" / "params.yaml"):
        text = path.read_text()
        v11 = dict(leaves(yaml.safe_load(text)))
        v12 = dict(leaves(YAML(typ="safe").load(text)))
        for key, value in v12.items():
            assert type(v11[key]) is type(value), f"{path.name}: {key} reads as {v11[key]!r} vs {value!r}"


def test_load_params__yaml_syntax_error_keeps_line_and_column(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\nruntime:\n  device: [cpu\n")
    with pytest.raises(ConfigError, match=r"params\.yaml:\d+:\d+: not valid YAML") as err:
        config.load_params(path)
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("nested", [False, True], ids=["top", "nested"])
def test_load_params__a_key_written_twice_is_refused_with_its_line(tmp_path, params, nested):
    """PyYAML keeps the last of two equal keys silently; the file would run with a value it does not show first."""
    path = write_params(tmp_path / "params.yaml", params)
    text = path.read_text()
    text = text.replace("  dataset: digits\n", "  dataset: digits\n  dataset: cifar10\n") if nested \
        else f"seed: 0\n{text}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"params\.yaml:\d+:\d+: not valid YAML: key '(seed|dataset)' written twice"):
        config.load_params(path)


@pytest.mark.parametrize("key", ["pretrain", "refine"])
def test_check_environment__batch_larger_than_the_training_images(tmp_path, params, key):
    params["data"]["train_limit"] = 100
    params[key]["batch_size"] = 128
    with pytest.raises(ConfigError, match=f"{key}.batch_size=128 exceeds the 100 training images"):
        config.check_environment(params, tmp_path)
    # a prepared data card is the authority when there is one
    card = tmp_path / "data" / params["data"]["dataset"] / "card.json"
    card.parent.mkdir(parents=True)
    card.write_text('{"counts": {"train": 1000, "val": 300, "test": 300}}')
    config.check_environment(params, tmp_path)


def test_check_environment__cuda_without_a_gpu(params, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    params["runtime"]["device"] = "cuda"
    with pytest.raises(ConfigError, match="runtime.device = 'cuda' but no CUDA device"):
        config.check_environment(params, "nowhere")


@pytest.mark.parametrize("edit, needle", [
    (lambda p: p["pretrain"].update(mask_ratio=float("nan")), "params: pretrain.mask_ratio = nan: not a finite number"),
    (lambda p: p["pretrain"].update(blr=float("inf")), "params: pretrain.blr = inf: not a finite number"),
    (lambda p: p["evaluate"].update(fewshot_cs=[1.0, float("inf")]), "params: evaluate.fewshot_cs.1 = inf"),
    (lambda p: p["model"].update(patch_size=3), "model.patch_size=3 does not divide the 8-pixel images of 'digits'"),
    (lambda p: p["data"].update(val_size=100000), "data.val_size=100000 leaves no training images (digits has 1437)"),
    (lambda p: p["pretrain"].update(batch_size=2048), "pretrain.batch_size=2048 exceeds the 1137 training images"),
])
def test_load_params__issue21_rows_give_one_line_before_anything_runs(tmp_path, params, edit, needle):
    edit(params)
    path = write_params(tmp_path / "params.yaml", params)
    with pytest.raises(ConfigError) as err:
        config.load_params(path)
    assert needle in str(err.value) and len(str(err.value).splitlines()) == 1


def test_load_params__yaml_nan_and_inf_spellings(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("mask_ratio: 0.75", "mask_ratio: .nan")
    assert ".nan" in text
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ConfigError, match="pretrain.mask_ratio = nan"):
        config.load_params(tmp_path / "params.yaml")
