"""The refinement's deltas carry their noise and its rule: paired per-image differences where both models scored the
same test images, the binomial rule only for files without per-image correctness."""
from __future__ import annotations

import math

import pytest

from pipeline.analysis.deltas import deltas_markdown, refinement_deltas


def _model(knn: float, bits: str | None, linear_bits: str | None = None) -> dict:
    protocol = {"acc": {"cls": knn}, **({"correct": {"cls": bits}} if bits else {})}
    details = {"test_size": 10, "knn": {"headline": "mim_refiner", "protocols": {"mim_refiner": protocol}},
               "linear": {"test": 0.5, **({"test_correct": linear_bits} if linear_bits else {})},
               "fewshot": {"1": {"runs": [0.3, 0.4, 0.5]}}}
    return {"eval": {"knn_cls": knn, "linear": 0.5, "fewshot_1": 0.4}, "details": details,
            "blocks": [{"cls": 0.5}, {"cls": knn}]}


def test_refinement_deltas__paired_where_both_hold_per_image_correctness():
    refined, pretrained = _model(0.8, "1111111100", "1100110011"), _model(0.7, "1111100110", "1100110011")
    out = refinement_deltas(refined, pretrained, val_size=300)
    assert out["d_knn_cls_vs_pretrained"] == pytest.approx(0.1)
    assert out["d_knn_cls_vs_pretrained_se"] == pytest.approx(math.sqrt((3 - 10 * 0.01) / 9 / 10))
    assert out["d_knn_cls_vs_pretrained_rule"] == "paired images"
    assert out["d_linear_vs_pretrained_se"] == 0.0 and out["d_linear_vs_pretrained_rule"] == "paired images"
    assert out["d_fewshot_1_vs_pretrained_rule"] == "paired splits"
    assert out["d_val_knn_vs_best_block_rule"] == "binomial"  # no per-block correctness in these blocks


def test_refinement_deltas__val_knn_pairs_the_refined_last_block_with_the_source_best_block():
    refined, pretrained = _model(0.8, None), _model(0.7, None)
    # the source's best block is block 1 (0.7 > 0.5); the refined last block scores the same 4 val images
    pretrained["blocks"], refined["blocks"] = [{"cls": 0.5}, {"cls": 0.75}], [{"cls": 0.5}, {"cls": 1.0}]
    pretrained["block_correct"] = ["0101", "1101"]
    refined["block_correct"] = ["0000", "1111"]
    out = refinement_deltas(refined, pretrained, val_size=4)
    assert out["d_val_knn_vs_best_block"] == pytest.approx(0.25)
    # per-image differences 0, 0, 1, 0: mean 0.25, unbiased variance 0.25, se sqrt(0.25 / 4) = 0.25
    assert out["d_val_knn_vs_best_block_se"] == pytest.approx(0.25)
    assert out["d_val_knn_vs_best_block_rule"] == "paired images"


def test_refinement_deltas__binomial_for_an_older_file_and_the_rule_shows_in_the_table():
    refined, pretrained = _model(0.8, "1111111100"), _model(0.7, None)
    out = refinement_deltas(refined, pretrained, val_size=300)
    assert out["d_knn_cls_vs_pretrained_rule"] == "binomial"
    assert out["d_knn_cls_vs_pretrained_se"] == pytest.approx(math.sqrt((0.8 * 0.2 + 0.7 * 0.3) / 10))
    row = {"model": "mae_nna", "objective": "nna", "pretrained": "mae", "depth": 6, "first_head_block": 2,
           "ema_pretrained_share": 0.001, "knn_cls": 0.8, **out}
    table = deltas_markdown([row])
    assert "+10.0 ± 19.2 (binomial)" in table and "(splits)" in table
