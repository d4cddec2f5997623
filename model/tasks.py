"""Offline task assignment: each row's setup is hard when its historical CVR is at most alpha.

The historical CVR of a setup at time t is a time-decayed ratio of the conversions to the clicks
it had *before* t (no leakage from the row itself or from the future):

    cvr(s, t) = (C(s, t) + k * prior) / (N(s, t) + k)
    N(s, t) = sum over clicks of s before t of 2^(-(t - t_click) / half_life)
    C(s, t) = sum over conversions of s before t of 2^(-(t - t_conversion) / half_life)

The prior (the overall CVR, weight ``k`` clicks) keeps a setup with little history near the
average instead of at 0/0. This is the research version; the streaming one lives in streams/.

>>> import numpy as np
>>> setup = np.array([0, 0, 0, 1])
>>> t = np.array([0, 10, 20, 5])
>>> converted_at = np.array([5, np.nan, np.nan, np.nan])
>>> decayed_cvr_asof(setup, t, converted_at, setup, t, half_life=1e9, prior=0.5, strength=1)
array([0.5 , 0.75, 0.5 , 0.5 ])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TaskRule:
    """How rows get their task: alpha, the decay half-life, and the prior's strength and mean
    (None: the data's own mean)."""

    alpha: float = 0.01
    half_life_days: float = 7.0
    prior_strength: float = 200.0
    prior_mean: float | None = None

    def prior(self, labels: np.ndarray) -> float:
        """The prior's mean for rows with these labels."""
        return float(np.mean(labels)) if self.prior_mean is None else self.prior_mean


SHIFT = 2**42  # ms offsets below 2^42 (139 years) and setup codes below 2^21 fit an int64 key


def _decayed_sums(event_setup, event_t, query_setup, query_t, rate) -> np.ndarray:
    """For each query, sum of exp(-rate (t_q - t_e)) over events of its setup with t_e < t_q."""
    if event_t.size == 0:
        return np.zeros(query_t.size)
    keys = event_setup.astype(np.int64) * SHIFT + event_t.astype(np.int64)
    order = np.argsort(keys, kind="stable")
    keys, times = keys[order], event_t[order].astype(np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(np.exp(rate * times))])
    group_start = np.searchsorted(keys, query_setup.astype(np.int64) * SHIFT, side="left")
    before = np.searchsorted(keys, query_setup.astype(np.int64) * SHIFT + query_t, side="left")
    total = cumulative[before] - cumulative[group_start]
    return total * np.exp(-rate * query_t.astype(np.float64))


def decayed_cvr_asof(
    setup: np.ndarray,
    click_t: np.ndarray,
    conversion_t: np.ndarray,
    query_setup: np.ndarray,
    query_t: np.ndarray,
    half_life: float,
    prior: float,
    strength: float,
) -> np.ndarray:
    """The decayed historical CVR of ``query_setup`` at ``query_t`` from events before it.

    ``setup`` are integer codes; times share one unit and origin (relative times keep the
    exponentials in range); ``conversion_t`` is NaN for clicks that did not convert.
    """
    rate = np.log(2) / half_life
    origin = min(click_t.min(), query_t.min())
    click_t, query_t = click_t - origin, query_t - origin
    converted = ~np.isnan(conversion_t)
    clicks = _decayed_sums(setup, click_t, query_setup, query_t, rate)
    conversions = _decayed_sums(
        setup[converted], conversion_t[converted] - origin, query_setup, query_t, rate
    )
    return (conversions + strength * prior) / (clicks + strength)


def setup_cvr_from(setup: np.ndarray, labels: np.ndarray, prior: float, strength: float):
    """Per setup code, the smoothed CVR of the given rows (for splits without time)."""
    n = int(setup.max()) + 1 if setup.size else 0
    clicks = np.bincount(setup, minlength=n)
    conversions = np.bincount(setup, weights=labels, minlength=n)
    return (conversions + strength * prior) / (clicks + strength)
