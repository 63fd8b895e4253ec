"""pipeline/stats.py: standard errors by hand, the first argmax and the one-standard-error rule."""
from __future__ import annotations

import math

import pytest

from pipeline.stats import (binomial_se, correctness_bits, difference_se, first_argmax, mean_se, means_difference_se,
                            paired_images_se, paired_se, within_one_se)


def test_binomial_se__by_hand():
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert binomial_se(0.682, 5000) == pytest.approx(0.006586, abs=1e-6)  # issue 15: 0.66 points
    assert binomial_se(1.0, 10) == 0.0


def test_difference_se__independent_accuracies_add_in_quadrature():
    assert difference_se(0.7, 5000, 0.75, 5000) == pytest.approx(math.sqrt((0.21 + 0.1875) / 5000))
    assert difference_se(1.0, 10, 0.0, 10) == 0.0


def test_paired_se__the_mean_difference_over_shared_splits():
    assert paired_se([0.5, 0.6, 0.7], [0.4, 0.5, 0.5]) == pytest.approx(1 / 30)  # differences 0.1, 0.1, 0.2
    assert paired_se([0.5], [0.4]) == 0.0  # one split: no spread to measure


def test_mean_se__unbiased_std_over_root_n():
    assert mean_se([0.1, 0.2, 0.3]) == pytest.approx(0.1 / math.sqrt(3))
    assert means_difference_se(0.1, 4, 0.2, 4) == pytest.approx(math.sqrt(0.05 / 4))


def test_first_argmax__exact_ties_go_to_the_first():
    # the block curves and grids share this rule: a tie between blocks 1 and 3 picks the shallower block 1
    assert first_argmax([0.5, 0.8, 0.7, 0.8]) == 1
    assert first_argmax([0.9]) == 0
    best, se, tied = within_one_se([0.5, 0.8, 0.7, 0.8], n=100)
    assert best == 1 and se == pytest.approx(0.04) and tied == [1, 3]


def test_paired_images_se__by_hand_and_below_the_binomial_rule():
    # a right on 8 of 10 images, b on 7; per-image d = a - b is 1 on two images, -1 on one, 0 elsewhere:
    # mean 0.1, unbiased variance (3 - 10 * 0.1 ** 2) / 9, SE sqrt(var / 10)
    a, b = "1111111100", "1111100110"
    assert paired_images_se(a, b) == pytest.approx(math.sqrt((3 - 10 * 0.01) / 9 / 10))
    assert paired_images_se(a, b) < difference_se(0.8, 10, 0.7, 10)  # agreement on 7 images is not noise
    assert paired_images_se(a, a) == 0.0
    assert correctness_bits([True, False, True]) == "101"
    with pytest.raises(ValueError, match="equal lengths"):
        paired_images_se("10", "101")
