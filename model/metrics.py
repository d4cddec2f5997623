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
