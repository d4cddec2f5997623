"""The validation gate: may a candidate replace the serving model?

Both are scored on the held-out tail of the window (its latest examples by label time). The
candidate passes when

- all its outputs are finite;
- its RIG on hard examples is not worse than the serving model's by more than ``max_rig_drop``
  (absolute), when the tail has at least ``min_positives`` hard positives to measure RIG;
- its calibration on hard examples is plausible: the expected number of conversions (the sum
  of its predictions) over the observed number lies within ``calibration_bounds``, or the gap
  is within chance (a two-sided Poisson test at ``calibration_p``), or it is no further from 1
  than the serving model's on the same tail. Hard examples are rare, so a tail rarely holds
  many positives; the test still refuses a model that predicts 300 conversions where 5
  happened, and does not refuse one that predicts 10. The comparison with the serving model is
  there because a tail cut by label time is not a fair sample for calibration: positives enter
  it at their conversion, negatives when their click's attribution window closes, so when
  traffic changes over an attribution window (a daily cycle against a six-hour window) the
  tail's conversion rate is off for every model alike.

>>> params = GateParams(max_rig_drop=0.01, calibration_bounds=(0.5, 2.0))
>>> judge({"finite": True, "hard_rig": 0.10, "hard_calibration": 1.1, "hard_calibration_p": 0.4},
...       {"hard_rig": 0.105}, params)
[]
>>> judge({"finite": True, "hard_rig": 0.05, "hard_calibration": 3.0, "hard_calibration_p": 1e-9},
...       {"hard_rig": 0.10}, params)
['hard_rig_drop', 'hard_calibration']
>>> judge({"finite": True, "hard_rig": 0.10, "hard_calibration": 0.45, "hard_calibration_p": 1e-9},
...       {"hard_rig": 0.10, "hard_calibration": 0.4}, params)
[]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import poisson

from model.metrics import auc, rig


@dataclass(frozen=True)
class GateParams:
    max_rig_drop: float = 0.01
    calibration_bounds: tuple[float, float] = (0.67, 1.5)
    calibration_p: float = 1e-3  #: a calibration gap is refused only when this unlikely
    tail_share: float = 0.1  #: the latest share of a window held out for the gate
    min_positives: int = 20  #: fewer positives do not measure RIG or AUC


def population_metrics(labels: np.ndarray, probs: np.ndarray, prefix: str,
                       min_positives: int = 1) -> dict:  # fmt: skip
    """Counts, RIG, AUC and calibration of one population (None where unmeasurable)."""
    positives, expected = int(labels.sum()), float(probs.sum())
    out: dict = {f"{prefix}_examples": int(labels.size), f"{prefix}_positives": positives,
                 f"{prefix}_expected": expected}  # fmt: skip
    measurable = labels.size > 0 and min_positives <= positives < labels.size
    out[f"{prefix}_rig"] = rig(labels, probs) if measurable else None
    out[f"{prefix}_auc"] = auc(labels, probs) if measurable else None
    calibrated = labels.size > 0 and (positives > 0 or expected > 0)
    ratio = expected / positives if positives else float("inf")
    out[f"{prefix}_calibration"] = ratio if calibrated and positives else None
    tails = min(poisson.cdf(positives, expected), poisson.sf(positives - 1, expected))
    out[f"{prefix}_calibration_p"] = min(1.0, 2 * float(tails)) if calibrated else None
    return out


def score(labels: np.ndarray, hard: np.ndarray, probs: dict[str, np.ndarray],
          min_positives: int = 1) -> dict:  # fmt: skip
    """Metrics of a model's outputs (``hard`` and ``soft`` heads) on each task's examples."""
    finite = all(bool(np.isfinite(p).all()) for p in probs.values())
    metrics = {"finite": finite}
    for task, rows in (("hard", hard), ("soft", ~hard)):
        p = np.nan_to_num(probs[task][rows], nan=0.5)
        metrics |= population_metrics(labels[rows], p, task, min_positives)
    return metrics


def judge(candidate: dict, serving: dict | None, params: GateParams) -> list[str]:
    """The reasons to reject ``candidate``; empty when it may be published."""
    if not candidate["finite"]:
        return ["non_finite_output"]
    reasons = []
    rig_now = candidate.get("hard_rig")
    rig_before = (serving or {}).get("hard_rig")
    measured = rig_now is not None and rig_before is not None
    if measured and rig_now < rig_before - params.max_rig_drop:
        reasons.append("hard_rig_drop")
    p_value = candidate.get("hard_calibration_p")
    if p_value is not None and p_value < params.calibration_p:
        ratio = candidate.get("hard_calibration")
        before = (serving or {}).get("hard_calibration")
        lo, hi = params.calibration_bounds
        no_worse = ratio and before and abs(math.log(ratio)) <= abs(math.log(before))
        if (ratio is None or not lo <= ratio <= hi) and not no_worse:
            reasons.append("hard_calibration")
    return reasons
