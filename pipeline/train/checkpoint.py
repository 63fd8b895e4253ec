"""Checkpoints hold state_dicts and primitives only; they are written atomically and read with weights_only."""
from __future__ import annotations

import hashlib
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import atomic_path
from pipeline.errors import CheckpointError
from pipeline.models.vit import ViTEncoder
from pipeline.models.weights import load_module_state

log = logging.getLogger(__name__)


def hash_state(state: dict[str, torch.Tensor]) -> str:
    """A sha256 of a state_dict's names and tensor bytes: ties a resume checkpoint to the weights it started from."""
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save `state` to a temporary name, then rename onto `path`."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True (no code runs from the file).

    Raises:
        CheckpointError: missing, truncated or corrupt, or it carries pickled objects beyond tensors/primitives.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with path.open("rb") as f:
        head = f.read(4)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip archive, or a legacy pickle
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (no torch.save archive: is it the right file?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused, it holds more than weights and primitives "
                              f"({str(err).splitlines()[0][:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of state, found {type(state).__name__}")
    return state


class Checkpointer:
    """The resumable training state of one run, tagged with a fingerprint of what defines the run.

    Args:
        path: where the resume checkpoint lives (not a declared DAG output, so neither tool deletes it).
        fingerprint: a hash of the params and inputs; a checkpoint with another fingerprint is ignored.
    """

    def __init__(self, path: str | Path, fingerprint: str):
        self.path, self.fingerprint = Path(path), fingerprint

    def save(self, state: dict[str, Any]) -> None:
        save_checkpoint(self.path, {**state, "fingerprint": self.fingerprint})

    def load(self) -> dict[str, Any] | None:
        """The saved state if it belongs to this run; None if there is none or it is of another run."""
        if not self.path.is_file():
            return None
        state = load_checkpoint(self.path)
        if state.get("fingerprint") != self.fingerprint:
            log.warning("ignoring %s: it belongs to other params or inputs; starting fresh", self.path)
            return None
        return state

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def load_encoder(path: str | Path) -> tuple[ViTEncoder, dict[str, Any]]:
    """The encoder stored in a pretrain or refine model.pt, rebuilt from its `arch` and loaded strictly.

    Returns:
        The encoder (on the CPU) and the whole checkpoint dict.
    """
    ckpt = load_checkpoint(path)
    if "arch" not in ckpt or "encoder" not in ckpt:
        raise CheckpointError(f"{path}: not a model checkpoint of this pipeline (no 'arch' and 'encoder' entries)")
    encoder = ViTEncoder(**ckpt["arch"])
    load_module_state(encoder, ckpt["encoder"], str(path))
    return encoder, ckpt
