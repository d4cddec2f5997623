"""Ad requests, the ads eligible for each, and the truth of every candidate: CTR and CVR.

A request is a user (an id the A/B test hashes to an arm) in a context (segment, device, OS,
geo, publisher, placement, hour, recency), drawn as the simulator draws clicks' user and context
features. Its candidates are ``candidates`` ads drawn like clicks (setup by traffic weight,
then campaign and creative). Each candidate has a true CTR,

    logit CTR = c0 + ctr_shared_strength * shared(user, context) + q_creative + q_placement,

which shares the CVR's user and context effects (``Marketplace.shared_logit``), so the users
who click are the users who convert, and a true CVR: the click logit of ``docs/simulator.md``,
noise included. ``c0`` is solved so the mean CTR is ``base_ctr``. Each setup also has a target
CPA and a daily budget (the advertiser's goal and means). The random tables use their own
streams, so the click traffic of a seed is the same with or without auctions.

>>> from simulator import Marketplace, SimConfig
>>> funnel = Funnel(Marketplace(SimConfig(advertisers=20, clicks=1000, days=1)))
>>> rng = np.random.default_rng(0)
>>> requests = funnel.requests(funnel.market.cfg.end_ms + np.arange(5), rng)
>>> c = funnel.candidates(requests, rng)
>>> len(c), c.features["setup"].shape, bool((c.true_ctr > 0).all() and (c.true_cvr < 1).all())
(20, (20,), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit

from rarecvr.units import HOUR_MS
from simulator.config import AuctionConfig
from simulator.marketplace import Marketplace, solve_offsets
from simulator.traffic import hour_weights

CALIBRATION_DRAWS = 200_000


@dataclass
class Requests:
    """Ad requests as columns: time, user id, and user and context feature indices."""

    ts_ms: np.ndarray
    user: np.ndarray
    context: dict[str, np.ndarray]

    def __len__(self) -> int:
        return self.ts_ms.size


@dataclass
class Candidates:
    """The eligible ads of requests, ``k`` a request in a row: features and truth."""

    request: np.ndarray  #: index of each candidate's request
    ts_ms: np.ndarray
    features: dict[str, np.ndarray]  #: index arrays, as Marketplace.draw_features gives
    true_ctr: np.ndarray
    true_cvr: np.ndarray  #: P(convert | click)

    def __len__(self) -> int:
        return self.request.size


class Funnel:
    """Requests, candidates, their truth, and each setup's goal and budget."""

    def __init__(self, market: Marketplace, cfg: AuctionConfig | None = None):
        self.market = market
        self.cfg = cfg = cfg or AuctionConfig()
        rng = np.random.default_rng([market.cfg.seed, 6, cfg.seed])
        self.creative_ctr = cfg.ctr_specific_sd * rng.standard_normal(len(market.creative_ids))
        self.placement_ctr = cfg.ctr_specific_sd * rng.standard_normal(market.cfg.placements)
        weight = (
            market.advertiser_traffic[market.setup_advertiser]
            / market.setups_per_adv[market.setup_advertiser]
        )
        self.setup_weight = weight / weight.sum()
        cvr = market.cvr(np.arange(market.n_setups), market.cfg.end_ms)
        spread = np.exp(cfg.target_cpa_sd * rng.standard_normal(market.n_setups))
        #: currency per conversion: what a conversion is worth to the setup's advertiser
        self.target_cpa = cfg.value_per_impression / (cfg.base_ctr * cvr) * spread
        eligible_per_day = cfg.requests_per_day * cfg.candidates * self.setup_weight
        share = cfg.budget_median * np.exp(cfg.budget_sd * rng.standard_normal(market.n_setups))
        #: currency per day, before the A/B test splits it between arms
        self.daily_budget = share * cfg.value_per_impression * eligible_per_day
        self.ctr_offset = 0.0
        calibration = self.candidates(
            self.requests(
                np.full(CALIBRATION_DRAWS // cfg.candidates, market.cfg.end_ms), rng, hours=True
            ),
            rng,
        )
        z = logit(calibration.true_ctr)  # every term but c0, which is 0 so far
        self.ctr_offset = float(solve_offsets(z, np.array([cfg.base_ctr]))[0])

    def requests(self, ts_ms: np.ndarray, rng: np.random.Generator, hours: bool = False):
        """Requests at ``ts_ms`` (each at its own hour of day; ``hours``: at random hours)."""
        if hours:
            hour = rng.choice(24, ts_ms.size, p=hour_weights(self.market.cfg.seasonality))
        else:
            hour = (ts_ms // HOUR_MS) % 24
        context = self.market.draw_context(hour.astype(np.int64), rng)
        user = rng.integers(0, self.cfg.users, ts_ms.size)
        return Requests(ts_ms, user, context)

    def candidates(self, requests: Requests, rng: np.random.Generator) -> Candidates:
        """``candidates`` eligible ads for each request, with their true CTR and CVR."""
        market, k = self.market, self.cfg.candidates
        request = np.repeat(np.arange(len(requests)), k)
        setup = rng.choice(market.n_setups, request.size, p=self.setup_weight)
        features = market.draw_ads(setup, rng) | {
            name: values[request] for name, values in requests.context.items()
        }
        ts_ms = requests.ts_ms[request]
        ctr_logit = (
            self.ctr_offset
            + self.cfg.ctr_shared_strength * market.shared_logit(features)
            + self.creative_ctr[features["creative"]]
            + self.placement_ctr[features["placement"]]
        )
        cvr_logit = (
            market.offset(setup, ts_ms)
            + market.feature_logit(features)
            + market.cfg.noise_sd * rng.standard_normal(setup.size)
        )
        return Candidates(request, ts_ms, features, expit(ctr_logit), expit(cvr_logit))
