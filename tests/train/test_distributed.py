"""Two gloo processes with half the batch each train exactly like one process with the whole batch."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline import distributed
from pipeline.data.loader import DeviceImages, epoch_order
from pipeline.models.mae import MaskedAutoencoder
from pipeline.models.vit import ViTEncoder
from pipeline.objectives.moco import Mixing
from pipeline.train.loop import fit
from pipeline.train.mae_step import mae_step_fn
from pipeline.data.views import device_views
from pipeline.models.momentum import MomentumKeys
from pipeline.models.refiner import Loss, Refiner, refine_step_fn

GLOBAL_BATCH, IMAGES = 16, 32  # two steps: the second one queries what the first pushed


def _data() -> DeviceImages:
    g = torch.Generator().manual_seed(0)
    return DeviceImages((torch.rand(IMAGES, 8, 8, 1, generator=g) * 255).to(torch.uint8).numpy(),
                        torch.randint(0, 3, (IMAGES,), generator=g).numpy(), [0.5], [0.25], torch.device("cpu"))


def train_two_steps(kind: str) -> dict:
    """Two SGD steps of `kind` (mae | nna | nnclr | moco | mochi | cc) on the global batch, split over the ranks of
    the current process group (if any); returns the epoch loss and the last step's gradients. cc's cluster contrast
    and marginal entropy need the global batch: a rank that used only its own half would differ here."""
    data = _data()
    torch.manual_seed(0)
    encoder = ViTEncoder(8, 2, 1, 16, 2, 2)
    keys = None
    if kind == "mae":
        model = MaskedAutoencoder(encoder, 16, 1, 2, 4.0, [0, 1], "softmax")
        step = mae_step_fn(model, model, data, 0.75, True, 0.2, True)
    else:
        model = Refiner(encoder, [0, 1], 16, 8, 16, queue_size=24, topk=1, clusters=3 if kind == "cc" else 0)
        if distributed.world().size > 1:
            distributed.convert_sync_batchnorm(model.heads)
        keys = MomentumKeys(model, 0.9) if kind in ("moco", "mochi") else None
        loss = Loss(kind, 0.2, Mixing(6, 4, 2) if kind == "mochi" else None, 1.0 if kind == "cc" else None)
        step = refine_step_fn(model, device_views(data, 0.25, 1, (0.1, 0.3)), loss, keys)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = fit(model, step, lambda e: epoch_order(IMAGES, GLOBAL_BATCH, 0, e, torch.device("cpu")), opt,
                 lambda s: 0.1, 1, seed=0, after_step=(lambda: keys.update(model)) if keys else None)
    return {"loss": result.history[0]["loss"],
            "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}}


def _rank(rank: int, world: int, port: int, out: str, kind: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.setup(torch.device("cpu"))
    try:
        result = train_two_steps(kind)
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["mae", "nna", "nnclr", "moco", "mochi", "cc"])
def test_two_processes__match_one_process_with_the_whole_batch(tmp_path, kind):
    torch.set_num_threads(1)
    reference = train_two_steps(kind)
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path), kind), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for got in ranks:
        assert got["loss"] == pytest.approx(reference["loss"], rel=1e-5, abs=1e-6)
        assert set(got["grads"]) == set(reference["grads"])
        for name, grad in reference["grads"].items():
            # float32 sums in another order (gathers, all-reduces), through two steps: 1e-4 relative is typical
            err = (got["grads"][name] - grad).norm()
            assert err <= 2.0e-3 * grad.norm() + 1.0e-4, f"{name}: |diff| {err:.3g} vs |grad| {grad.norm():.3g}"


def test_convert_sync_batchnorm__keeps_weights_and_statistics():
    bn = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn.running_mean.copy_(torch.tensor([0.5, -0.5, 1.0]))
    sync = distributed.convert_sync_batchnorm(torch.nn.Sequential(bn))[0]
    assert isinstance(sync, distributed.SyncBatchNorm1d)
    for name, value in bn.state_dict().items():
        assert torch.equal(sync.state_dict()[name], value), name
