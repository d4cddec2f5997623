"""The validation gate: may a candidate replace the serving model?

Both are scored on the trainer's holdout: the hard examples of the latest windows' held-out
tails (``trainer.holdout``), which no model ever trains on. The candidate passes when

- all its outputs are finite;
- it is better than a constant on hard examples, with confidence (the floor): its log loss
  beats that of a constant predictor at the hard conversion rate the trainer saw before, and
  the one-sided lower bound (``floor_z`` standard errors) of that gain is above 0. A holdout
  with fewer than ``min_positives`` hard positives cannot show it, so nothing is published
  until there is enough data: a model that cannot be shown to beat a constant is never served;
- it is not worse than the serving model by more than ``max_rig_drop`` of hard RIG, with
  confidence: the one-sided lower bound of its paired gain over the serving model on each
  holdout example (``vs_serving``) is above ``-max_rig_drop``. A small window's fine-tune that
  is a little worse by point estimate and unknown within its noise stays unpublished, and the
  version serving, already shown above a constant, keeps serving;
- its calibration on hard examples is plausible: the expected number of conversions (the sum
  of its predictions) over the observed number lies within ``calibration_bounds``, or the gap
  is within chance (a two-sided Poisson test at ``calibration_p``): with rare conversions a
  holdout holds few positives, so the test refuses a model that predicts 300 conversions where
  5 happened and not one that predicts 10. Labels come by click-time cohort (a positive waits
  for its attribution window, as the negatives do), so the holdout's rate is the population's.

>>> params = GateParams(max_rig_drop=0.01, calibration_bounds=(0.5, 2.0))
>>> good = {"finite": True, "hard_rig": 0.10, "hard_calibration": 1.1, "hard_calibration_p": 0.4,
...         "hard_positives": 40, "hard_rig_vs_constant_low": 0.02}
>>> judge(good, {"hard_rig": 0.105}, params)
[]
>>> judge(good | {"hard_rig_vs_serving_low": -0.02}, {"hard_rig": 0.09}, params)
['hard_rig_drop']
>>> judge(good | {"hard_rig": 0.05, "hard_calibration": 3.0, "hard_calibration_p": 1e-9},
...       {"hard_rig": 0.10}, params)
['hard_rig_drop', 'hard_calibration']
>>> judge(good | {"hard_rig_vs_constant_low": -0.01}, {"hard_rig": -0.5}, params)
['not_above_constant']
>>> judge(good | {"hard_positives": 3}, None, params)
['too_few_positives']
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import poisson

from model.metrics import EPS, auc, entropy, rig


@dataclass(frozen=True)
class GateParams:
    max_rig_drop: float = 0.01
    calibration_bounds: tuple[float, float] = (0.67, 1.5)
    calibration_p: float = 1e-3  #: a calibration gap is refused only when this unlikely
    tail_share: float = 0.1  #: the latest share of a window held out for the gate
    min_positives: int = 20  #: fewer hard positives in the holdout measure nothing
    floor_z: float = 1.645  #: the floor's confidence: 95%, one-sided
    holdout_examples: int = 200_000  #: hard examples of recent tails kept for the gate


def population_metrics(
    labels: np.ndarray, probs: np.ndarray, prefix: str, min_positives: int = 1
) -> dict:
    """Counts, RIG, AUC and calibration of one population (None where unmeasurable)."""
    positives, expected = int(labels.sum()), float(probs.sum())
    out: dict = {
        f"{prefix}_examples": int(labels.size),
        f"{prefix}_positives": positives,
        f"{prefix}_expected": expected,
    }
    measurable = labels.size > 0 and min_positives <= positives < labels.size
    out[f"{prefix}_rig"] = rig(labels, probs) if measurable else None
    out[f"{prefix}_auc"] = auc(labels, probs) if measurable else None
    calibrated = labels.size > 0 and (positives > 0 or expected > 0)
    ratio = expected / positives if positives else float("inf")
    out[f"{prefix}_calibration"] = ratio if calibrated and positives else None
    tails = min(poisson.cdf(positives, expected), poisson.sf(positives - 1, expected))
    out[f"{prefix}_calibration_p"] = min(1.0, 2 * float(tails)) if calibrated else None
    return out


def _losses(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float64), EPS, 1 - EPS)
    return -(labels * np.log(p) + (1 - labels) * np.log1p(-p))


def _gain(gain: np.ndarray, base: float, z: float) -> tuple[float, float, float]:
    """The mean of per-example gains over ``base``, with ``z`` standard errors either side."""
    mean, se = float(gain.mean()), float(gain.std(ddof=1) / math.sqrt(gain.size))
    return mean / base, (mean - z * se) / base, (mean + z * se) / base


def vs_constant(labels: np.ndarray, probs: np.ndarray, rate: float, z: float) -> dict:
    """The model's RIG over a constant predictor at ``rate`` (``1 - LogLoss / LogLoss_const``)
    and its confidence bounds, ``z`` standard errors of the mean per-example gain either side.

    >>> y = np.array([1, 0, 0, 0] * 50)
    >>> out = vs_constant(y, np.where(y == 1, 0.5, 0.2), rate=0.25, z=1.645)
    >>> round(out["rig_vs_constant"], 3), out["rig_vs_constant_low"] > 0
    (0.394, True)
    """
    keys = ("rig_vs_constant", "rig_vs_constant_low", "rig_vs_constant_high")
    if labels.size < 2:
        return dict.fromkeys(keys)
    y = labels.astype(np.float64)
    constant = _losses(y, np.full(y.size, float(rate)))
    gain = constant - _losses(y, probs)
    return dict(zip(keys, _gain(gain, float(constant.mean()), z), strict=True))


def vs_serving(labels: np.ndarray, probs: np.ndarray, serving: np.ndarray, z: float) -> dict:
    """The candidate's RIG minus the serving model's on the same examples, paired: the mean
    per-example log-loss gain over the holdout's entropy (the RIG denominator), with ``z``
    standard errors either side. A fine-tune and its parent score nearly the same on each
    example, so the pairing measures their difference far better than two separate RIGs.

    >>> y = np.array([1, 0, 0, 0] * 50)
    >>> out = vs_serving(y, np.where(y == 1, 0.5, 0.2), np.full(200, 0.25), z=1.645)
    >>> round(out["rig_vs_serving"], 3), out["rig_vs_serving_low"] > 0
    (0.394, True)
    """
    keys = ("rig_vs_serving", "rig_vs_serving_low", "rig_vs_serving_high")
    if labels.size < 2 or not 0 < labels.sum() < labels.size:
        return dict.fromkeys(keys)
    y = labels.astype(np.float64)
    gain = _losses(y, serving) - _losses(y, probs)
    return dict(zip(keys, _gain(gain, entropy(y.mean()), z), strict=True))


def score(
    labels: np.ndarray, hard: np.ndarray, probs: dict[str, np.ndarray], min_positives: int = 1
) -> dict:
    """Metrics of a model's outputs (``hard`` and ``soft`` heads) on each task's examples."""
    finite = all(bool(np.isfinite(p).all()) for p in probs.values())
    metrics = {"finite": finite}
    for task, rows in (("hard", hard), ("soft", ~hard)):
        p = np.nan_to_num(probs[task][rows], nan=0.5)
        metrics |= population_metrics(labels[rows], p, task, min_positives)
    return metrics


def score_hard(labels: np.ndarray, probs: np.ndarray, rate: float, params: GateParams) -> dict:
    """The gate's figures of a model's hard predictions on hard examples (the holdout)."""
    finite = bool(np.isfinite(probs).all())
    p = np.nan_to_num(probs, nan=0.5)
    out = {"finite": finite, "constant_rate": rate}
    out |= population_metrics(labels, p, "hard", params.min_positives)
    out |= {f"hard_{k}": v for k, v in vs_constant(labels, p, rate, params.floor_z).items()}
    return out


def implausible(serving_tail: dict | None, params: GateParams) -> bool:
    """Whether a window's tail disagrees with the serving version beyond chance: its hard
    conversions are outside ``calibration_bounds`` of what the version expects, at
    ``calibration_p``. Such a tail says more about its labels than about any model (a broken
    tag, a tracking outage, flipped labels), and is kept out of the holdout, which every later
    candidate is judged on. (A real change of the rate looks the same; docs/trainer.md.)

    >>> params = GateParams()
    >>> implausible({"hard_calibration": 0.2, "hard_calibration_p": 1e-9}, params)
    True
    >>> implausible({"hard_calibration": 0.8, "hard_calibration_p": 0.2}, params)
    False
    """
    p_value = (serving_tail or {}).get("hard_calibration_p")
    ratio = (serving_tail or {}).get("hard_calibration")
    lo, hi = params.calibration_bounds
    return (
        p_value is not None
        and p_value < params.calibration_p
        and (ratio is None or not lo <= ratio <= hi)
    )


def _worse_than_serving(candidate: dict, serving: dict | None, margin: float) -> bool:
    """Not shown to lose less than ``margin`` of hard RIG against the serving model: the paired
    lower bound where there is one (a non-inferiority test), else the two RIGs' difference."""
    low = candidate.get("hard_rig_vs_serving_low")
    if low is not None:
        return low < -margin
    now, before = candidate.get("hard_rig"), (serving or {}).get("hard_rig")
    return now is not None and before is not None and now < before - margin


def judge(candidate: dict, serving: dict | None, params: GateParams) -> list[str]:
    """The reasons to reject ``candidate``; empty when it may be published."""
    if not candidate["finite"]:
        return ["non_finite_output"]
    if candidate.get("hard_positives", 0) < params.min_positives:
        return ["too_few_positives"]
    reasons = []
    low = candidate.get("hard_rig_vs_constant_low")
    if low is None or low <= 0:
        reasons.append("not_above_constant")
    if _worse_than_serving(candidate, serving, params.max_rig_drop):
        reasons.append("hard_rig_drop")
    p_value = candidate.get("hard_calibration_p")
    if p_value is not None and p_value < params.calibration_p:
        ratio = candidate.get("hard_calibration")
        lo, hi = params.calibration_bounds
        if ratio is None or not lo <= ratio <= hi:
            reasons.append("hard_calibration")
    return reasons
