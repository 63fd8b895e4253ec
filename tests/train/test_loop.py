"""The training loop: exact resume from a checkpoint, and divergence errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from pipeline.errors import DivergenceError
from pipeline.train.checkpoint import Checkpointer
from pipeline.train.loop import fit

DATA = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))


def make():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 1))  # dropout: uses the RNG
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    return model, opt


def batches(epoch):
    order = torch.randperm(64, generator=torch.Generator().manual_seed(epoch))
    return [order[i:i + 16] for i in range(0, 64, 16)]


def step_fn(model):
    return lambda idx: (model(DATA[idx]).pow(2).mean(), {})


def train(epochs, ckpt=None):
    model, opt = make()
    result = fit(model, step_fn(model), batches, opt, lambda s: 0.01, epochs, seed=0, checkpointer=ckpt)
    return model, result


def test_fit__resumed_run_equals_uninterrupted(tmp_path):
    ref, ref_result = train(4)
    ckpt = Checkpointer(tmp_path / "resume.pt", "run-a")
    train(2, ckpt)  # "killed" after epoch 2: a new process starts from the checkpoint
    resumed, result = train(4, ckpt)
    assert result.resumed_from_epoch == 2
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert [r["loss"] for r in result.history] == [r["loss"] for r in ref_result.history]


def test_fit__checkpoint_of_other_run_is_ignored(tmp_path):
    train(2, Checkpointer(tmp_path / "resume.pt", "run-a"))
    _, result = train(3, Checkpointer(tmp_path / "resume.pt", "run-b"))
    assert result.resumed_from_epoch == 0 and len(result.history) == 3


def test_fit__nan_loss_names_step_and_keeps_last_checkpoint(tmp_path):
    model, opt = make()
    ckpt = Checkpointer(tmp_path / "resume.pt", "run")
    fit(model, step_fn(model), batches, opt, lambda s: 0.01, 1, seed=0, checkpointer=ckpt)
    before = (tmp_path / "resume.pt").read_bytes()

    def poisoned(idx):
        loss, m = step_fn(model)(idx)
        return (loss * float("nan") if int(idx[0]) >= 0 and poisoned.calls >= 2 else loss), m

    def counting(idx):
        poisoned.calls += 1
        return poisoned(idx)

    poisoned.calls = 0
    with pytest.raises(DivergenceError, match=r"non-finite loss at step 5; last good checkpoint: .*resume.pt \(epoch 1\)"):
        fit(model, counting, batches, opt, lambda s: 0.01, 3, seed=0, checkpointer=ckpt, check_every=100)
    assert (tmp_path / "resume.pt").read_bytes() == before
