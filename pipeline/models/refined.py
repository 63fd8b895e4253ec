"""The heads of a refined model.pt, rebuilt for evaluation from their saved weights: the last head block's cluster
head (objective cc) and its projector's embedding (the collapse analysis of the space the loss shapes)."""
from __future__ import annotations

from typing import Callable

import torch

from pipeline.errors import CheckpointError
from pipeline.models.heads import ClusterHead, cc_instance_projector, mlp
from pipeline.models.refiner import head_features
from pipeline.models.vit import ViTEncoder
from pipeline.models.weights import load_module_state


def saved_cluster_head(refiner_state: dict[str, torch.Tensor], source: str) -> ClusterHead | None:
    """The cluster head of the last head block (it reads the encoder's CLS output, the feature evaluation takes)
    from a refined model.pt's "refiner" state, or None when the refinement trained none (objectives but cc).

    Raises:
        CheckpointError: the saved weights do not form a cluster head (naming `source`).
    """
    heads = sorted({int(k.split(".")[1]) for k in refiner_state if k.startswith("cluster_heads.")})
    if not heads:
        return None
    prefix = f"cluster_heads.{heads[-1]}."
    state = {k.removeprefix(prefix): v for k, v in refiner_state.items() if k.startswith(prefix)}
    clusters, dim = state.get("mlp.2.weight", torch.empty(0, 0)).shape
    head = ClusterHead(dim, clusters)
    load_module_state(head, state, f"{source}:refiner cluster head")
    return head.eval()


def saved_head_embedding(ckpt: dict, source: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """The embedding of a refined model.pt: the online encoder's CLS feature of the last head block (raw block
    output, or through the final norm at the encoder's last block, as refinement reads it) through that head's
    projector in eval mode (BatchNorm on its running statistics).

    Returns:
        (normalized images [B, C, H, W] -> embeddings [B, out] (call under no_grad; modules on the images' device),
        the 0-based head block).
    """
    refiner, blocks = ckpt["refiner"], ckpt["head_blocks"]
    prefix = f"heads.{len(blocks) - 1}.projector."
    state = {k.removeprefix(prefix): v for k, v in refiner.items() if k.startswith(prefix)}
    linears = sorted(int(k.split(".")[0]) for k in state if k.endswith("weight") and state[k].ndim == 2)
    if not linears:
        raise CheckpointError(f"{source}: refiner state has no {prefix}* weights (not a refined model.pt?)")
    widths = [state[f"{linears[0]}.weight"].shape[1]] + [state[f"{i}.weight"].shape[0] for i in linears]
    # Contrastive Clustering's instance head has biases and no BatchNorm (Linear, ReLU, Linear); ours has neither
    projector = cc_instance_projector(widths[0], widths[-1]) if "0.bias" in state else mlp(widths)
    load_module_state(projector, state, f"{source}:{prefix}")
    encoder = ViTEncoder(**ckpt["arch"])
    load_module_state(encoder, ckpt["online_encoder"], f"{source}:online_encoder")
    encoder.eval(), projector.eval()

    def embed(images: torch.Tensor) -> torch.Tensor:
        encoder.to(images.device), projector.to(images.device)
        return projector(head_features(encoder, images, blocks)[-1].float())

    return embed, blocks[-1]
