"""Checkpoints: weights_only loading, corrupt files, other architectures."""
from __future__ import annotations

import pickle

import pytest
import torch

from pipeline.errors import CheckpointError
from pipeline.models.vit import ViTEncoder
from pipeline.train.checkpoint import load_checkpoint, load_module_state, save_checkpoint


class Payload:
    def __reduce__(self):
        return (print, ("code ran from a checkpoint",))


def test_load_checkpoint__roundtrip(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(2), "epoch": 3, "history": [{"loss": 1.0}]})
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind


def test_load_checkpoint__refuses_pickled_code(tmp_path):
    torch.save({"evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")


def test_load_checkpoint__truncated(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"w": torch.randn(1000)})
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "c.pt")


def test_load_checkpoint__not_a_checkpoint(tmp_path):
    (tmp_path / "c.pt").write_bytes(pickle.dumps([1, 2]) + b"garbage")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "c.pt")


def test_load_module_state__other_architecture():
    small, wide = ViTEncoder(8, 2, 1, 32, 2, 2), ViTEncoder(8, 2, 1, 64, 2, 2)
    with pytest.raises(CheckpointError, match="does not fit the model architecture"):
        load_module_state(small, wide.state_dict(), "wide.pt")
    deeper = ViTEncoder(8, 2, 1, 32, 3, 2)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_module_state(small, deeper.state_dict(), "deep.pt")


@pytest.mark.parametrize("content", [b"hello world\n", b"{\"encoder\": {}}", b""], ids=["text", "json", "empty"])
def test_load_checkpoint__a_file_that_is_no_checkpoint_says_so(tmp_path, content):
    """A text or JSON file given as --model is named as not a checkpoint, not as one that 'holds more than weights'."""
    (tmp_path / "c.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=r"c\.pt: not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "c.pt")
