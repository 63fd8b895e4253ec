"""The checkpoint formats a pretrain variant can start from (pretrain.variants.<v>.init).

Accepted: the official MAE `.pth` (a dict whose `model` entry is the state_dict), a timm state_dict (`.pth`/`.bin`
read with weights_only, or `.safetensors`), this pipeline's own pretrain/refine `model.pt`, and a timm model name
(`timm:<name>`) whose weights are already in the local Hugging Face cache (nothing is downloaded).
ViTEncoder's parameter names are timm's VisionTransformer names (cls_token, pos_embed, patch_embed.proj,
blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}, norm) and MaskedAutoencoder's decoder names are the
official MAE names (mask_token, decoder_embed, decoder_pos_embed, decoder_blocks, decoder_norm, decoder_pred), so
the import is a split of the keys, not a renaming.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipeline.config import TIMM_INIT_PREFIX as TIMM_PREFIX
from pipeline.errors import CheckpointError
from pipeline.models.mae import MaskedAutoencoder
from pipeline.models.pos_embed import sincos_2d
from pipeline.train.checkpoint import load_checkpoint, load_module_state

log = logging.getLogger(__name__)
DECODER_KEYS = ("mask_token", "decoder_embed.", "decoder_pos_embed", "decoder_blocks.", "decoder_norm.",
                "decoder_pred.")
CLASSIFIER_KEYS = ("head.",)  # a timm classifier's head: not part of an encoder (num_classes=0)
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub loader looks for, in its order


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file's tensors. Raises CheckpointError when missing, truncated or not safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({type(err).__name__})") from None


def read_state(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The flat state_dict of a checkpoint file of any accepted format, and the format's name.

    A pipeline model.pt gives its encoder's keys and, for a pretrain model.pt, its decoder's (the MFF fusion is
    left out: it is dropped after pretraining).
    """
    if path.suffix == ".safetensors":
        return read_safetensors(path), "safetensors"
    ckpt = load_checkpoint(path)
    if "arch" in ckpt and "encoder" in ckpt:
        decoder = {k: v for k, v in ckpt.get("model", {}).items() if k.startswith(DECODER_KEYS)}
        return {**ckpt["encoder"], **decoder}, "pipeline model.pt"
    for key, name in (("model", "MAE .pth"), ("state_dict", "timm training checkpoint")):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    else:
        name = "timm state_dict"
    if not ckpt or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise CheckpointError(f"{path}: neither a state_dict nor a dict holding one under 'model' or 'state_dict'")
    return ckpt, name


def timm_cached_file(name: str) -> Path:
    """The weights file of timm model `name` (architecture.tag) in the local Hugging Face cache; no download.

    Raises:
        CheckpointError: timm knows no such name, or its weights are not in the cache.
    """
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError as err:  # a known architecture with an unknown tag
        raise CheckpointError(f"init {TIMM_PREFIX}{name}: {err}") from None
    if cfg is None or not cfg.hf_hub_id:
        raise CheckpointError(f"init {TIMM_PREFIX}{name}: timm has no pretrained weights of that name on the hub")
    for filename in HUB_FILES:
        hit = try_to_load_from_cache(cfg.hf_hub_id, filename)
        if isinstance(hit, str):
            return Path(hit)
    raise CheckpointError(f"init {TIMM_PREFIX}{name}: {cfg.hf_hub_id} is not in the local Hugging Face cache "
                          f"(this pipeline never downloads; fetch it once with timm.create_model({name!r}, "
                          f"pretrained=True), or give the file's path)")


def init_path(init: str) -> Path:
    """The file a pretrain variant's `init` names: a path, or a timm name resolved in the local cache."""
    return timm_cached_file(init[len(TIMM_PREFIX):]) if init.startswith(TIMM_PREFIX) else Path(init)


def import_weights(model: MaskedAutoencoder, init: str) -> dict[str, object]:
    """Load `init` into `model`: the encoder strictly, the decoder when the file has one of the same shapes.

    A timm classifier head is ignored; any other key the encoder does not have, or one it lacks, or a shape that
    differs, is a CheckpointError naming the file (a wrong architecture: compare `model` in params.yaml).

    Returns:
        What was loaded, for the log and metrics.json: {"init", "file", "format", "decoder"}.
    """
    path = init_path(init)
    state, fmt = read_state(path)
    source = f"{path} ({fmt})"
    encoder_state = {k: v for k, v in state.items() if not k.startswith(DECODER_KEYS + CLASSIFIER_KEYS)}
    load_module_state(model.encoder, encoder_state, source)
    decoder_state = {k: v for k, v in state.items() if k.startswith(DECODER_KEYS)}
    own = {k: v for k, v in model.state_dict().items() if k.startswith(DECODER_KEYS)}
    decoder = bool(decoder_state) and decoder_state.keys() == own.keys() and all(
        own[k].shape == v.shape for k, v in decoder_state.items())
    if decoder:
        model.load_state_dict({**model.state_dict(), **decoder_state})
    elif decoder_state:
        log.warning("%s: its decoder does not fit model.decoder_* (keys or shapes differ); the decoder starts fresh",
                    source)
    if not _is_sincos(model.encoder.pos_embed):
        log.warning("%s: its position table is not MAE's 2-D sin-cos; it is kept for %d-pixel inputs, other sizes "
                    "(refine.local_size) get the sin-cos table of their grid", source, model.encoder.arch["img_size"])
    log.info("initialised from %s: encoder%s", source, " and decoder" if decoder else "")
    return {"init": init, "file": str(path), "format": fmt, "decoder": decoder}


def _is_sincos(pos_embed: torch.Tensor) -> bool:
    n, d = pos_embed.shape[1] - 1, pos_embed.shape[2]
    side = int(round(n ** 0.5))
    return side * side == n and torch.allclose(pos_embed, sincos_2d(d, side, side).to(pos_embed), atol=1e-5)
