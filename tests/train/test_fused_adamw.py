"""Fused AdamW (issue 20): the pipeline's optimizer takes torch's fused kernel wherever torch has one (the CPU
included), the fused update follows the for-each one up to float rounding, and a fused run resumes exactly."""
from __future__ import annotations

import torch

from pipeline.models.mae import MaskedAutoencoder
from pipeline.models.vit import ViTEncoder
from pipeline.train.checkpoint import Checkpointer
from pipeline.train.loop import fit
from pipeline.train.mae_step import mae_step_fn
from pipeline.train.optim import adamw, fused_supported, param_groups

# fp32 parameters after 6 steps at lr 1e-3: the two kernels order their float operations differently, so they
# differ by a few ulps (measured max 1.2e-7); the steps move weights by ~6e-3 (an Adam step is about lr), far above
ATOL = 1.0e-6
STEPS, LR = 6, 1.0e-3
IMAGES = torch.randn(STEPS, 16, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def tiny_mae() -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(ViTEncoder(8, 2, 1, 32, 2, 2), 32, 1, 2)


def train_mae(fused: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(initial, final) parameters of a tiny MAE after STEPS of the pipeline's MAE step (same masks each run)."""
    model = tiny_mae()
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=LR, betas=(0.9, 0.95), fused=fused)
    step = mae_step_fn(model, model, lambda images: images, 0.75, False, 0.2, False)
    torch.manual_seed(1)  # the masks
    for images in IMAGES:
        loss, _ = step(images)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return start, {k: v.detach() for k, v in model.named_parameters()}


def test_adamw__picks_the_fused_kernel_on_cpu():
    assert fused_supported("cpu")  # torch >= 2.4 (envs/requirements.txt pins 2.14)
    opt = adamw(param_groups(tiny_mae(), 0.05), (0.9, 0.95), torch.device("cpu"))
    assert opt.defaults["fused"] is True and not opt.defaults["foreach"]


def without_key_bias(name: str, t: torch.Tensor) -> torch.Tensor:
    """Drop the key third of an attention qkv bias: its exact gradient is zero (softmax ignores a constant added to
    every score of a query), so Adam normalizes rounding noise there into lr-sized steps of either sign, in both
    kernels alike (measured gaps up to 3e-4). Every other weight must agree."""
    if not name.endswith("qkv.bias"):
        return t
    d = t.shape[0] // 3
    return torch.cat([t[:d], t[2 * d:]])


def test_fused_adamw__matches_foreach_within_tolerance():
    start, fused = train_mae(fused=True)
    _, foreach = train_mae(fused=False)
    moved = max((fused[k] - start[k]).abs().max().item() for k in start)
    gap = max(without_key_bias(k, fused[k] - foreach[k]).abs().max().item() for k in start)
    assert moved > 100 * ATOL  # the steps really moved the weights
    assert gap <= ATOL, f"fused and for-each AdamW differ by {gap:.2e} after {STEPS} steps"


def test_fused_adamw__resumed_run_equals_uninterrupted(tmp_path):
    def run(epochs: int, ckpt: Checkpointer | None) -> dict[str, torch.Tensor]:
        model = tiny_mae()
        opt = adamw(param_groups(model, 0.05), (0.9, 0.95), torch.device("cpu"))
        step = mae_step_fn(model, model, lambda i: IMAGES[int(i)], 0.75, False, 0.2, False)
        fit(model, step, lambda epoch: [torch.tensor([i]) for i in range(STEPS // 2)], opt, lambda s: LR, epochs,
            seed=0, checkpointer=ckpt)
        return model.state_dict()

    reference = run(4, None)
    ckpt = Checkpointer(tmp_path / "resume.pt", "fused")
    run(2, ckpt)  # "killed" after epoch 2
    resumed = run(4, ckpt)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
