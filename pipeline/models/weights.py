"""Loading saved weights into a module: a key or shape mismatch is one line naming the file, never a traceback."""
from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.errors import CheckpointError


def load_module_state(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load `state_dict` strictly, turning a key or shape mismatch into a one-line CheckpointError."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if missing or unexpected or shapes:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                  else f"shape of {shapes[0]}: {tuple(state_dict[shapes[0]].shape)} vs {tuple(own[shapes[0]].shape)}")
        raise CheckpointError(f"{source}: checkpoint does not fit the model architecture ({detail})")
    module.load_state_dict(state_dict)
