"""Metrics on hand-computed cases."""

import math

import pytest

from model import metrics


def test_log_loss_of_a_sure_right_and_an_even_guess():
    # -(log 0.9 + log 0.5) / 2
    assert metrics.log_loss([1, 0], [0.9, 0.5]) == pytest.approx(
        -(math.log(0.9) + math.log(0.5)) / 2
    )


def test_rig_is_zero_for_the_base_rate_and_one_for_a_perfect_model():
    labels = [1, 0, 0, 0, 0]
    assert metrics.rig(labels, [0.2] * 5) == pytest.approx(0.0, abs=1e-12)
    assert metrics.rig(labels, [1, 0, 0, 0, 0]) == pytest.approx(1.0, abs=1e-5)


def test_rig_matches_the_paper_formula():
    labels, probs = [1, 0, 0, 1], [0.6, 0.3, 0.2, 0.7]
    gamma = 0.5
    h = -gamma * math.log(gamma) - (1 - gamma) * math.log(1 - gamma)
    ll = -(math.log(0.6) + math.log(0.7) + math.log(0.8) + math.log(0.7)) / 4
    assert metrics.rig(labels, probs) == pytest.approx(1 - ll / h)


def test_auc_counts_ties_as_one_half():
    # pairs (pos, neg): (0.5, 0.5) tie -> 0.5, (0.5, 0.1) -> 1, (0.9, 0.5) -> 1, (0.9, 0.1) -> 1
    assert metrics.auc([1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1]) == pytest.approx(3.5 / 4)


def test_auc_needs_both_classes():
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        metrics.auc([1, 1], [0.2, 0.3])


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="must be equal 1-d shapes"):
        metrics.log_loss([1, 0], [0.5])
