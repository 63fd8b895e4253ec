"""The rules of params.yaml that relate keys to each other, checked after the schema.

params.schema.yaml checks each key alone (type, range, allowed values); this module checks the rules that relate
keys across sections, and keys against the facts of the built-in datasets (pipeline/data/facts.py). The rules are
grouped below by the params section they guard: data, model, pretrain, refine, then the batch sizes of the training
stages. `check` runs them in a fixed order: the first rule broken is the error reported.
"""
from __future__ import annotations

from pipeline.data.facts import FACTS, DatasetFacts
from pipeline.errors import ConfigError


def check(params: dict) -> None:
    """Check the cross-key rules of a params dict that passed the schema.

    Raises:
        ConfigError: naming the first offending key.
    """
    _check_data_stream(params["data"], params["evaluate"])
    for name, variant in params["pretrain"]["variants"].items():
        _check_model(variant_model(params["model"], variant), _model_key(name, variant))
    _check_pretrain_schedule(params["pretrain"])
    _check_refine_local_size(params)
    _check_batch_split(params)
    _check_refine_variants(params)
    _check_pretrain_variants(params)
    _check_against_dataset(params)


# data ---------------------------------------------------------------------------------------------------------------

def _check_data_stream(data: dict, evaluate: dict) -> None:
    if data["stream"] and data["dataset"] != "imagefolder":
        raise ConfigError(f"params: data.stream=true streams an ImageFolder tree; it needs data.dataset=imagefolder "
                          f"(got {data['dataset']!r})")
    if data["stream"] and not data["root"]:
        raise ConfigError("params: data.stream=true needs data.root (a folder with train/ and val/ class subfolders)")
    if evaluate["train_split"] == "full" and (data["dataset"] != "imagefolder" or not data["root"]):
        raise ConfigError(f"params: evaluate.train_split=full reads an ImageFolder's whole root/train; it needs "
                          f"data.dataset=imagefolder and data.root (got {data['dataset']!r}, root {data['root']!r}; "
                          f"other datasets' prepared train split is whole with data.train_limit=0)")
    if data["resize"] is not None and data["resize"] < data["image_size"]:
        raise ConfigError(f"params: data.resize={data['resize']} is below data.image_size={data['image_size']} (the "
                          f"centre crop is taken from the resized image)")


def _check_against_dataset(params: dict) -> None:
    """Rules that need the image side, channels, classes and the train split's size: known for the built-in
    datasets."""
    data, patch = params["data"], params["model"]["patch_size"]
    # an imagefolder tree is RGB with data.image_size and unknown counts (config check reads the data card once
    # prepare wrote it)
    facts = FACTS.get(data["dataset"], DatasetFacts(data["image_size"], 3, None, None))
    side, channels, train, classes = facts.side, facts.channels, facts.train, facts.classes
    if side % patch:
        raise ConfigError(f"params: model.patch_size={patch} does not divide the {side}-pixel images of "
                          f"{data['dataset']!r}" + (" (data.image_size)" if data["dataset"] == "imagefolder" else ""))
    if params["pretrain"]["norm_pix_loss"] and patch * patch * channels < 2:
        raise ConfigError(f"params: pretrain.norm_pix_loss=true with model.patch_size={patch}: a patch of "
                          f"{data['dataset']!r} holds one value, whose unbiased variance is undefined (a NaN loss)")
    if params["refine"]["local_size"] > side:
        raise ConfigError(f"params: refine.local_size={params['refine']['local_size']} exceeds the {side}-pixel images "
                          f"of {data['dataset']!r} (a local crop is a part of the image; 0 = the image size)")
    if params["evaluate"]["kmeans"] and classes and 0 < data["test_limit"] < classes:
        raise ConfigError(f"params: data.test_limit={data['test_limit']} keeps fewer test images than the {classes} "
                          f"clusters (the classes of {data['dataset']!r}) that evaluate.kmeans=true fits")
    if train is None:
        return
    if data["val_size"] >= train:
        raise ConfigError(f"params: data.val_size={data['val_size']} leaves no training images ({data['dataset']} "
                          f"has {train})")
    left = train - data["val_size"]
    kept = min(left, data["train_limit"]) if data["train_limit"] else left
    for key, value in batch_sizes(params):
        if value > kept:
            raise ConfigError(f"params: {key}={value} exceeds the {kept} training images ({data['dataset']} after "
                              f"data.val_size and data.train_limit)")


# model --------------------------------------------------------------------------------------------------------------

def variant_model(model: dict, variant: dict) -> dict:
    """The model keys of a pretrain variant: the global `model`, with the variant's own `model` entries in place."""
    return {**model, **variant.get("model", {})}  # optional key: absent = the global sizes (params.schema.yaml)


def _model_key(name: str, variant: dict):
    """key -> where a variant's model key is set: its own entry, or the global `model` it inherits."""
    own = variant.get("model", {})
    return lambda key: f"pretrain.variants.{name}.model.{key}" if key in own else f"model.{key}"


def _check_model(model: dict, where) -> None:
    """A model's sizes that the schema cannot relate: widths against heads, the 2-D sin-cos width."""
    for width, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
        if model[width] % model[heads]:
            raise ConfigError(f"params: {where(width)}={model[width]} is not divisible by "
                              f"{where(heads)}={model[heads]}")
    if model["embed_dim"] % 4:
        raise ConfigError(f"params: {where('embed_dim')}={model['embed_dim']} must be a multiple of 4 (2-D sin-cos)")


# pretrain -----------------------------------------------------------------------------------------------------------

def _check_pretrain_schedule(pretrain: dict) -> None:
    if pretrain["warmup_epochs"] >= pretrain["epochs"]:
        raise ConfigError(f"params: pretrain.warmup_epochs={pretrain['warmup_epochs']} must be below "
                          f"pretrain.epochs={pretrain['epochs']}")


def _check_pretrain_variants(params: dict) -> None:
    """Each pretrain variant's fusion keys, fuse_blocks and start (init, epochs)."""
    model, pretrain = params["model"], params["pretrain"]
    for name, variant in pretrain["variants"].items():
        blocks, depth = variant["fuse_blocks"], variant_model(model, variant)["depth"]
        for key in ("fusion_lr_scale", "fusion_weight_decay"):
            if key in variant and not (blocks and variant["fusion"] == "softmax"):
                raise ConfigError(f"params: pretrain.variants.{name}.{key} is for a variant with learned fusion "
                                  f"(fuse_blocks and fusion: softmax)")
        if blocks and (sorted(blocks) != blocks or blocks[-1] != depth - 1 or len(blocks) < 2):
            raise ConfigError(f"params: pretrain.variants.{name}.fuse_blocks={blocks} must be increasing, hold "
                              f"at least two blocks and end with the last block {depth - 1} "
                              f"({_model_key(name, variant)('depth')}={depth})")
        _check_variant_start(name, variant, pretrain)


def _check_variant_start(name: str, variant: dict, pretrain: dict) -> None:
    """A variant's own `epochs` (else pretrain.epochs) against `init` and pretrain.warmup_epochs."""
    epochs = variant.get("epochs")
    if epochs == 0 and not variant.get("init"):
        raise ConfigError(f"params: pretrain.variants.{name}.epochs=0 without init would keep a random encoder "
                          f"(the baselines stage reports that one); set init to a checkpoint")
    if epochs and epochs <= pretrain["warmup_epochs"]:
        raise ConfigError(f"params: pretrain.variants.{name}.epochs={epochs} must exceed pretrain.warmup_epochs="
                          f"{pretrain['warmup_epochs']} (or be 0 with init: the imported model, untrained)")


# refine -------------------------------------------------------------------------------------------------------------

def _check_refine_local_size(params: dict) -> None:
    local_size, patch = params["refine"]["local_size"], params["model"]["patch_size"]
    if local_size % patch:
        raise ConfigError(f"params: refine.local_size={local_size} is not a multiple of model.patch_size="
                          f"{patch}")


def _check_refine_variants(params: dict) -> None:
    """Each refine variant's name, the pretrain variant it starts from, its blocks, its MoCo keys and cc head."""
    model, pretrain = params["model"], params["pretrain"]
    reserved = set(pretrain["variants"]) | {"baselines", "random-init", "pixels"}
    for name, refined in params["refine"]["variants"].items():
        if name in reserved:
            raise ConfigError(f"params: refine.variants.{name} reuses a name of pretrain.variants or of a baseline "
                              f"(results/<stage>/{name} would hold two models)")
        if refined["pretrained"] not in pretrain["variants"]:
            raise ConfigError(f"params: refine.variants.{name}.pretrained={refined['pretrained']!r} is not a key of "
                              f"pretrain.variants ({', '.join(sorted(pretrain['variants']))})")
        source = pretrain["variants"][refined["pretrained"]]
        _check_refined_blocks(params["refine"], variant_model(model, source)["depth"],
                              _model_key(refined["pretrained"], source)("depth"))
        for key in ("moco_momentum", "moco_momentum_schedule"):
            if key in refined and refined["objective"] not in ("moco", "mochi"):
                raise ConfigError(f"params: refine.variants.{name}.{key} is for objectives moco and mochi "
                                  f"(its objective is {refined['objective']!r})")
        if "cc_head" in refined and refined["objective"] != "cc":
            raise ConfigError(f"params: refine.variants.{name}.cc_head is for objective cc (Contrastive "
                              f"Clustering's instance head; its objective is {refined['objective']!r})")


def _check_refined_blocks(refine: dict, blocks: int, depth_key: str) -> None:
    """refine.depth and refine.heads against the blocks of the encoder a refinement starts from."""
    depth = refine["depth"]
    if isinstance(depth, int) and depth > blocks:
        raise ConfigError(f"params: refine.depth={depth} is beyond the model's {blocks} blocks ({depth_key})")
    heads, kept = refine["heads"], depth if isinstance(depth, int) else blocks
    if isinstance(heads, int) and heads > kept:  # depth: probe is only known after the probe; refine checks it then
        raise ConfigError(f"params: refine.heads={heads} exceeds the {kept} blocks that refine.depth={depth!r} keeps "
                          f"({depth_key}={blocks})")


# batch sizes of the training stages (pretrain, refine, evaluate.finetune) -------------------------------------------

def batch_sizes(params: dict) -> list[tuple[str, int]]:
    """The global batch sizes of the training stages, by their params key."""
    return [("pretrain.batch_size", params["pretrain"]["batch_size"]),
            ("refine.batch_size", params["refine"]["batch_size"]),
            ("evaluate.finetune.batch_size", params["evaluate"]["finetune"]["batch_size"])]


def _check_batch_split(params: dict) -> None:
    nproc = params["runtime"]["nproc"]
    for key, value in batch_sizes(params):
        if value % nproc:
            raise ConfigError(f"params: {key}={value} is not divisible by "
                              f"runtime.nproc={nproc} (each process takes an equal slice of the global batch)")
