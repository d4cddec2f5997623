"""The validation gate's decisions on predictions alone: the floor against a constant and the
paired non-inferiority test against the serving version."""

from __future__ import annotations

import numpy as np

from trainer.gate import GateParams, judge, score_hard, vs_serving

PARAMS = GateParams()
RNG = np.random.default_rng(7)
TRUTH = RNG.uniform(0.005, 0.08, 20_000)  #: hard clicks: rare, varied conversion rates
LABELS = (RNG.random(TRUTH.size) < TRUTH).astype(np.float32)
RATE = float(LABELS.mean())


def figures(candidate: np.ndarray, serving: np.ndarray | None) -> tuple[dict, dict | None]:
    mine = score_hard(LABELS, candidate, RATE, PARAMS)
    if serving is None:
        return mine, None
    mine |= {f"hard_{k}": v for k, v in vs_serving(LABELS, candidate, serving, 1.645).items()}
    return mine, score_hard(LABELS, serving, RATE, PARAMS)


def test_a_candidate_as_good_as_the_serving_version_passes():
    assert judge(*figures(TRUTH, TRUTH), PARAMS) == []


def test_a_candidate_shown_worse_than_the_serving_version_is_refused():
    blurred = 0.5 * TRUTH + 0.5 * RATE  # half way to a constant: above it, below the truth
    candidate, serving = figures(blurred, TRUTH)
    assert candidate["hard_rig_vs_constant_low"] > 0
    assert candidate["hard_rig_vs_serving_low"] < -PARAMS.max_rig_drop
    assert judge(candidate, serving, PARAMS) == ["hard_rig_drop"]


def test_the_paired_difference_is_the_difference_of_the_two_rigs():
    candidate, serving = figures(0.8 * TRUTH + 0.2 * RATE, TRUTH)
    diff = candidate["hard_rig"] - serving["hard_rig"]
    assert np.isclose(candidate["hard_rig_vs_serving"], diff, atol=1e-9)
    assert candidate["hard_rig_vs_serving_low"] < diff < candidate["hard_rig_vs_serving_high"]


def test_a_candidate_worse_than_a_constant_is_refused_even_when_the_serving_one_is_worse_still():
    candidate, serving = figures(np.full(TRUTH.size, 3 * RATE), np.full(TRUTH.size, 6 * RATE))
    assert candidate["hard_rig_vs_serving_low"] > 0  # better than what serves
    assert "not_above_constant" in judge(candidate, serving, PARAMS)


def test_without_a_serving_version_the_floor_alone_decides():
    assert judge(*figures(TRUTH, None), PARAMS) == []
    assert judge(*figures(np.full(TRUTH.size, RATE), None), PARAMS) == ["not_above_constant"]
