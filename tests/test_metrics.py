"""Metrics on hand-computed cases."""

import math

import numpy as np
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


def test_calibration_ratio_is_predicted_over_observed():
    assert metrics.calibration_ratio([1, 0, 0, 0], [0.5, 0.5, 0.25, 0.25]) == pytest.approx(1.5)


def test_ece_over_quantile_bins_by_hand():
    # two bins of two: [0.1, 0.2] vs labels [0, 1] -> |0.15 - 0.5| = 0.35;
    # [0.7, 0.9] vs labels [1, 1] -> |0.8 - 1| = 0.2; weighted mean 0.275
    assert metrics.ece([0, 1, 1, 1], [0.1, 0.2, 0.7, 0.9], bins=2) == pytest.approx(0.275)


def test_ece_is_zero_when_every_bin_is_calibrated():
    assert metrics.ece([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], bins=2) == pytest.approx(0.0)


def test_bootstrap_interval_contains_the_point_estimate():
    rng = np.random.default_rng(1)
    p = rng.random(2000)
    y = (rng.random(2000) < p).astype(int)
    lo, hi = metrics.bootstrap_ci(metrics.auc, y, p, reps=100)
    assert lo < metrics.auc(y, p) < hi
    assert hi - lo < 0.1


def test_paired_comparison_of_a_model_with_itself_is_zero():
    rng = np.random.default_rng(2)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(int)
    out = metrics.paired_bootstrap_comparison(metrics.rig, y, p, p, reps=50)
    assert out["lift"] == out["ci_low"] == out["ci_high"] == 0.0
    assert out["diff"] == out["diff_ci_low"] == out["diff_ci_high"] == 0.0


@pytest.mark.parametrize(
    ("value", "baseline", "expected"),
    [
        (0.12, 0.10, 0.2),  # positive baseline: the usual lift
        (-0.0105, -0.0815, 0.0710 / 0.0815),  # negative baseline, a is better: positive
        (-0.09, -0.06, -0.5),  # negative baseline, a is worse: negative
    ],
)
def test_a_relative_lift_keeps_its_sign_whatever_the_baselines(value, baseline, expected):
    assert metrics.relative_lift(value, baseline) == pytest.approx(expected)


def test_a_relative_lift_over_a_zero_baseline_is_undefined():
    assert np.isnan(metrics.relative_lift(0.05, 0.0))


def test_a_difference_interval_straddles_zero_when_two_models_are_alike():
    rng = np.random.default_rng(3)
    truth = rng.random(3000) * 0.2
    y = (rng.random(3000) < truth).astype(int)
    a = np.clip(truth + rng.normal(0, 0.01, 3000), 1e-4, 1)
    b = np.clip(truth + rng.normal(0, 0.01, 3000), 1e-4, 1)
    out = metrics.paired_bootstrap_comparison(metrics.rig, y, a, b, reps=100)
    assert out["diff_ci_low"] < 0 < out["diff_ci_high"]
    assert out["diff"] == pytest.approx(metrics.rig(y, a) - metrics.rig(y, b))
