"""The policy and the naive rule replayed hour by hour over a click log, offline.

What the stream worker and the stabilizer decide online, from the same evidence, without a
broker: every setup is re-decided at the end of every hour of event time from its decayed
clicks (7-day half-life), its decayed conversions counted when they happen, and its clicks too
recent to have converted discounted by the delay distribution seen so far (the estimator of
``docs/streams.md``). The naive rule is hard iff that CVR is at most alpha. The stabilizer's
benchmark scores both against the truth; the A/B simulator routes by them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from rich.progress import track

from rarecvr.units import HOUR_MS
from stabilizer.policy import Evidence, PolicyParams, decide

HALF_LIFE_H = 7 * 24
WINDOW_H = 7 * 24


@dataclass
class HourlyCounts:
    """Clicks per (setup, hour), conversions per (setup, hour they happened), and the histogram
    of conversion delays in whole hours (capped at the attribution window)."""

    clicks: np.ndarray
    conversions: np.ndarray
    delays: np.ndarray

    @classmethod
    def of(
        cls,
        chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
        setups: int,
        hours: int,
        start_ms: int,
    ) -> HourlyCounts:
        """Count ``(setup, click ts_ms, conversion ts_ms or -1)`` chunks of a click log."""
        clicks = np.zeros((setups, hours))
        conversions = np.zeros((setups, hours + WINDOW_H + 1))
        delays = np.zeros(WINDOW_H + 1)
        for setup, ts_ms, conversion_ts_ms in chunks:
            np.add.at(clicks, (setup, (ts_ms - start_ms) // HOUR_MS), 1)
            done = conversion_ts_ms >= 0
            np.add.at(conversions, (setup[done], (conversion_ts_ms[done] - start_ms) // HOUR_MS), 1)
            delay_h = (conversion_ts_ms[done] - ts_ms[done]) // HOUR_MS
            np.add.at(delays, np.minimum(delay_h, WINDOW_H), 1)
        return cls(clicks, conversions[:, :hours], delays)


def evidence_by_hour(counts: HourlyCounts) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (hour, decayed mature clicks, decayed conversions) per setup at each hour's end."""
    clicks, conversions, delays = counts.clicks, counts.conversions, counts.delays
    decay = 2.0 ** (-1.0 / HALF_LIFE_H)
    cdf = np.cumsum(delays) / max(delays.sum(), 1.0)  # P(delay < age + 1 hour), age in hours
    ages = np.arange(WINDOW_H)
    immature_weight = decay**ages * (1.0 - cdf[ages])
    dc = np.zeros(clicks.shape[0])
    dv = np.zeros(clicks.shape[0])
    for h in range(clicks.shape[1]):
        dc = dc * decay + clicks[:, h]
        dv = dv * decay + conversions[:, h]
        recent = clicks[:, max(0, h - WINDOW_H + 1) : h + 1][:, ::-1]
        immature = recent @ immature_weight[: recent.shape[1]]
        yield h, np.maximum(dc - immature, 0.0), dv


def replay(
    counts: HourlyCounts,
    groups: list[str],
    params: PolicyParams,
    start_ms: int,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Each setup's task at the end of each hour under the policy and under the naive rule:
    two (setups, hours) arrays, 1 hard, 0 soft, -1 before the setup's first click.

    ``groups`` are the setups' peer groups (``type/category`` of their tags), as online.
    """
    clicks = counts.clicks
    n, hours = clicks.shape
    first_hour = np.where(clicks.sum(1) > 0, np.argmax(clicks > 0, axis=1), hours)
    book = params.peer_book()
    current: list = [None] * n
    policy_task = np.full((n, hours), -1)
    naive_task = np.full((n, hours), -1)
    hourly = evidence_by_hour(counts)
    if progress:
        hourly = track(hourly, total=hours, description="stabilizer hours")
    for h, mature, conv in hourly:
        now_ms = start_ms + (h + 1) * HOUR_MS
        seen = np.flatnonzero(first_hour <= h)
        for s in seen:
            book.update(str(s), groups[s], mature[s], conv[s])
        for s in seen:
            prior = book.prior(groups[s]) or params.default_prior()
            new = decide(current[s], Evidence(mature[s], conv[s]), prior, now_ms, params)
            if new is not None:
                current[s] = new
            policy_task[s, h] = current[s].task == "hard"
        cvr = np.divide(
            conv[seen], mature[seen], out=np.full(seen.size, np.inf), where=mature[seen] > 0
        )
        naive_task[seen, h] = cvr <= params.alpha
    return policy_task, naive_task
