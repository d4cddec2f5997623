"""Impressions: what the auctions of ``simulator.auctions`` showed, and what came of them.

A logging policy decides what is shown, without any model: each candidate bids its setup's
target CPA x its true CTR x the setup's configured CVR (an advertiser's average, the same for
every user), and the best bid above the floor (the reserve, or the request's best outside bid)
is shown. Each impression is clicked with its true CTR and a click converts with its true CVR.
Clicked impressions are the click log a CVR model is usually trained on; all of them are the
"entire space" of ESMM (Ma et al. 2018), where every candidate of an auction is scored.

>>> from simulator import Marketplace, SimConfig
>>> market = Marketplace(SimConfig(advertisers=20, clicks=1000, days=1))
>>> shown = next(impressions(Funnel(market), market.cfg.start_ms, days=1, seed=0))
>>> bool(shown.clicked.sum() <= len(shown)), bool((shown.converted <= shown.clicked).all())
(True, True)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from rarecvr.units import DAY_MS, HOUR_MS
from simulator.auctions import Funnel
from simulator.traffic import hour_weights


@dataclass
class Impressions:
    """Shown ads as columns: time, features, the truth, and the outcome."""

    ts_ms: np.ndarray
    features: dict[str, np.ndarray]
    true_ctr: np.ndarray
    true_cvr: np.ndarray  #: P(convert | click): what a click here would convert to
    clicked: np.ndarray
    converted: np.ndarray

    def __len__(self) -> int:
        return self.ts_ms.size


def impressions(funnel: Funnel, start_ms: int, days: float, seed: int) -> Iterator[Impressions]:
    """The impressions of ``days`` of requests from ``start_ms``, an hour a chunk."""
    market, cfg = funnel.market, funnel.cfg
    rng = np.random.default_rng([market.cfg.seed, 8, seed])
    weights = hour_weights(market.cfg.seasonality)
    setup_cvr = market.cvr(np.arange(market.n_setups), start_ms)
    for hour in range(int(days * DAY_MS // HOUR_MS)):
        t0 = start_ms + hour * HOUR_MS
        n = int(rng.poisson(cfg.requests_per_day * weights[(t0 // HOUR_MS) % 24]))
        requests = funnel.requests(t0 + rng.integers(0, HOUR_MS, n), rng)
        c = funnel.candidates(requests, rng)
        setup = c.features["setup"]
        bids = (funnel.target_cpa[setup] * c.true_ctr * setup_cvr[setup]).reshape(n, -1)
        outside = np.exp(np.log(cfg.outside_median) + cfg.outside_sd * rng.standard_normal(n))
        best = bids.argmax(axis=1)
        shown = np.flatnonzero(bids[np.arange(n), best] > np.maximum(outside, cfg.reserve_price))
        row = shown * cfg.candidates + best[shown]
        clicked = rng.random(row.size) < c.true_ctr[row]
        yield Impressions(
            ts_ms=c.ts_ms[row],
            features={name: values[row] for name, values in c.features.items()},
            true_ctr=c.true_ctr[row],
            true_cvr=c.true_cvr[row],
            clicked=clicked,
            converted=clicked & (rng.random(row.size) < c.true_cvr[row]),
        )
