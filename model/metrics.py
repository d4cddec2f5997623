"""Evaluation metrics as pure functions of labels and predicted probabilities.

RIG follows the paper: ``RIG = 1 - LogLoss / H(gamma)`` where ``gamma`` is the mean label of the
evaluation set, so a model that predicts the base rate everywhere scores 0.

>>> round(log_loss([1, 0], [0.5, 0.5]), 6)
0.693147
>>> rig([1, 0, 0, 0], [0.25, 0.25, 0.25, 0.25])
0.0
>>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
0.75
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

EPS = 1e-7


def _arrays(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} must be equal 1-d shapes")
    if y.size == 0:
        raise ValueError("no examples to evaluate")
    return y, p


def log_loss(labels, probs) -> float:
    """Mean binary cross-entropy in nats; probabilities are clipped to [1e-7, 1 - 1e-7]."""
    y, p = _arrays(labels, probs)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def entropy(gamma: float) -> float:
    """Binary entropy H(gamma) in nats: the log loss of always predicting the base rate."""
    g = min(max(float(gamma), EPS), 1 - EPS)
    return float(-g * np.log(g) - (1 - g) * np.log1p(-g))


def rig(labels, probs) -> float:
    """Relative information gain, 1 - LogLoss / H(mean label). Higher is better; 0 = base rate."""
    y, p = _arrays(labels, probs)
    return 1.0 - log_loss(y, p) / entropy(y.mean())


def pooled_rig(windows: list[tuple[float, int, int]]) -> float | None:
    """The RIG of windows scored one by one, ``(rig, examples, positives)`` each, as if scored
    together: each window's log loss is ``(1 - rig) * H(its mean label)``, and the pooled
    denominator is the entropy of all their labels. None without a window.

    >>> a, b = ([1, 0, 0, 0], [0.6, 0.2, 0.1, 0.3]), ([0, 1, 0, 0, 0, 0], [0.1, 0.3] + [0.2] * 4)
    >>> together = rig(a[0] + b[0], a[1] + b[1])
    >>> parts = [(rig(y, p), len(y), sum(y)) for y, p in (a, b)]
    >>> round(pooled_rig(parts), 9) == round(together, 9)
    True
    """
    if not windows:
        return None
    n = sum(examples for _, examples, _ in windows)
    k = sum(positives for _, _, positives in windows)
    loss = sum(
        (1 - r) * examples * entropy(positives / examples) for r, examples, positives in windows
    )
    return 1.0 - loss / (n * entropy(k / n))


def auc(labels, scores) -> float:
    """Exact ROC AUC (ties count one half), by the Mann-Whitney rank statistic."""
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs at least one positive and one negative example")
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def calibration_ratio(labels, probs) -> float:
    """Predicted over observed conversions: 1 is calibrated, above 1 over-predicts."""
    y, p = _arrays(labels, probs)
    observed = y.sum()
    return float(p.sum() / observed) if observed > 0 else float("inf")


def ece(labels, probs, bins: int = 10) -> float:
    """Expected calibration error over quantile bins of the prediction (equal counts per bin).

    The mean over bins, weighted by size, of |mean prediction - mean label|.
    """
    y, p = _arrays(labels, probs)
    order = np.argsort(p, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, min(bins, y.size)):
        total += chunk.size * abs(p[chunk].mean() - y[chunk].mean())
    return float(total / y.size)


def calibration_curve(labels, probs, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean prediction and mean label of each quantile bin, for a reliability plot."""
    y, p = _arrays(labels, probs)
    order = np.argsort(p, kind="stable")
    chunks = np.array_split(order, min(bins, y.size))
    return np.array([p[c].mean() for c in chunks]), np.array([y[c].mean() for c in chunks])


def bootstrap_ci(
    metric, labels, probs, reps: int = 200, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """A percentile bootstrap interval of ``metric(labels, probs)`` over resampled examples."""
    y = np.asarray(labels)
    p = np.asarray(probs)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        idx = rng.integers(0, y.size, y.size)
        try:
            values.append(metric(y[idx], p[idx]))
        except ValueError:  # a resample without both classes
            continue
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def relative_lift(value: float, baseline: float) -> float:
    """``(value - baseline) / |baseline|``: positive when ``value`` is the better of the two
    whatever the baseline's sign (``value / baseline - 1`` flips it for a negative baseline);
    NaN for a baseline of 0.

    >>> round(relative_lift(0.11, 0.10), 4), round(relative_lift(-0.0105, -0.0815), 4)
    (0.1, 0.8712)
    >>> relative_lift(0.1, 0.0)
    nan
    """
    return (value - baseline) / abs(baseline) if baseline else float("nan")


def paired_bootstrap_comparison(
    metric, labels, probs_a, probs_b, reps: int = 200, level: float = 0.95, seed: int = 0
) -> dict:
    """Model a against model b: both values, their difference and the relative lift of a
    (``relative_lift``), each with a paired percentile bootstrap interval (both scored on the
    same resamples)."""
    y, a, b = np.asarray(labels), np.asarray(probs_a), np.asarray(probs_b)
    value_a, value_b = metric(y, a), metric(y, b)
    rng = np.random.default_rng(seed)
    diffs, lifts = [], []
    for _ in range(reps):
        idx = rng.integers(0, y.size, y.size)
        try:
            ra, rb = metric(y[idx], a[idx]), metric(y[idx], b[idx])
        except ValueError:  # a resample without both classes
            continue
        diffs.append(ra - rb)
        lifts.append(relative_lift(ra, rb))
    q = [(1 - level) / 2, (1 + level) / 2]
    diff_lo, diff_hi = np.quantile(diffs, q)
    finite = [v for v in lifts if np.isfinite(v)]
    lo, hi = np.quantile(finite, q) if finite else (float("nan"), float("nan"))
    return {
        "value": float(value_a),
        "baseline": float(value_b),
        "diff": float(value_a - value_b),
        "diff_ci_low": float(diff_lo),
        "diff_ci_high": float(diff_hi),
        "lift": float(relative_lift(value_a, value_b)),
        "ci_low": float(lo),
        "ci_high": float(hi),
    }
