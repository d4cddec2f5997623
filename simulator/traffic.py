"""Clicks over time, their true probabilities, and the conversions they lead to.

Traffic comes in time-ordered chunks so that ten million clicks never sit in memory at once:
``generate`` yields :class:`Clicks` whose timestamps are sorted and follow each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, ndtri
from scipy.stats import norm

from rarecvr.units import DAY_MS, HOUR_MS
from simulator.marketplace import Marketplace


@dataclass
class Clicks:
    """A chunk of clicks as columns: ids, time, feature indices, truth and outcome."""

    seq: np.ndarray  #: global click number, the click id is ``c<seq>``
    ts_ms: np.ndarray
    features: dict[str, np.ndarray]  #: index arrays (see Marketplace.draw_features)
    true_p: np.ndarray
    converted: np.ndarray  #: bool: a conversion follows within the attribution window
    conversion_ts_ms: np.ndarray  #: -1 where there is none

    def __len__(self) -> int:
        return self.seq.size


def hour_weights(seasonality: float) -> np.ndarray:
    """Relative click intensity by hour of day: one daily cycle peaking in the evening."""
    hours = np.arange(24)
    weights = 1 + seasonality * np.sin(2 * np.pi * (hours - 14) / 24)
    return weights / weights.sum()


def click_times(market: Marketplace, rng: np.random.Generator) -> np.ndarray:
    """Every click's timestamp (ms), sorted, with the daily seasonality of the config."""
    cfg = market.cfg
    n = cfg.clicks
    days = int(np.ceil(cfg.days))
    day = rng.integers(0, days, n)
    hour = rng.choice(24, n, p=hour_weights(cfg.seasonality))
    within = rng.random(n) * HOUR_MS
    ts = cfg.start_ms + day * DAY_MS + hour * HOUR_MS + within.astype(np.int64)
    ts = ts[ts < cfg.end_ms]
    # Redraw the few that fell past a fractional last day, uniformly in the horizon.
    short = n - ts.size
    if short:
        ts = np.concatenate([ts, rng.integers(cfg.start_ms, cfg.end_ms, short)])
    ts.sort()
    return ts


def conversion_delays(
    median_ms: np.ndarray, sigma: float, window_ms: int, rng: np.random.Generator
) -> np.ndarray:
    """Log-normal delays truncated to the attribution window (inverse-CDF sampling)."""
    mu = np.log(median_ms)
    top = norm.cdf((np.log(window_ms) - mu) / sigma)
    u = rng.random(median_ms.size) * top
    return np.minimum(np.exp(mu + sigma * ndtri(u)), window_ms - 1).astype(np.int64)


def generate(market: Marketplace, chunk_size: int = 500_000) -> Iterator[Clicks]:
    """All the traffic of the config's horizon, as time-ordered chunks of clicks."""
    cfg = market.cfg
    rng = np.random.default_rng([cfg.seed, 3])
    ts_all = click_times(market, rng)
    setup_weight = (
        market.advertiser_traffic[market.setup_advertiser]
        / market.setups_per_adv[market.setup_advertiser]
    )
    setup_weight /= setup_weight.sum()
    for start in range(0, ts_all.size, chunk_size):
        ts = ts_all[start : start + chunk_size]
        n = ts.size
        setup = rng.choice(market.n_setups, n, p=setup_weight)
        hour = ((ts // HOUR_MS) % 24).astype(np.int64)
        features = market.draw_features(setup, hour, rng)
        logit = (
            market.offset(setup, ts)
            + market.feature_logit(features)
            + cfg.noise_sd * rng.standard_normal(n)
        )
        true_p = expit(logit)
        converted = rng.random(n) < true_p
        delays = conversion_delays(
            market.delay_median_ms[setup], cfg.delay_sigma, cfg.attribution_window_ms, rng
        )
        yield Clicks(
            seq=np.arange(start, start + n, dtype=np.int64),
            ts_ms=ts,
            features=features,
            true_p=true_p,
            converted=converted,
            conversion_ts_ms=np.where(converted, ts + delays, -1),
        )


def setup_clicks(market: Marketplace) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The traffic as (setup, click ts_ms, conversion ts_ms or -1) chunks: what the stabilizer's
    evidence is made of."""
    for chunk in generate(market):
        yield chunk.features["setup"], chunk.ts_ms, chunk.conversion_ts_ms
