"""Advertisers, their conversion setups, and the effect tables of the true click logit.

A setup's *configured CVR* at time t is the mean true probability of its clicks then. It is
``base_cvr * exp(drift * t / horizon)``, clipped to ``[min_cvr, max_cvr]``; the logit offset that
makes the mean of ``sigmoid(offset + effects)`` equal it is solved numerically per setup (on a
grid of times for drifting setups), so realised CVRs match the configured ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from simulator.config import ADVERTISER_TYPES, CATEGORIES, SimConfig

CATEGORY_NAMES = list(CATEGORIES)
TYPE_NAMES = list(ADVERTISER_TYPES)
DEVICES = ["mobile", "desktop", "tablet", "ctv"]
OSES = ["android", "ios", "windows", "macos", "linux", "other"]
CALIBRATION_DRAWS = 4096


def zipf_pmf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """A Zipf-like popularity distribution over ``n`` values, in a random order."""
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(weights / weights.sum())


@dataclass
class Effects:
    """Logit effect tables. Shared ones move every setup alike; the others are task-specific."""

    segment_shared: np.ndarray
    device_shared: np.ndarray
    geo_shared: np.ndarray
    hour_shared: np.ndarray
    publisher_shared: np.ndarray
    recency_shared: float  #: per unit of standardised log1p(recency_days)
    segment_hard: np.ndarray
    publisher_hard: np.ndarray
    segment_soft: np.ndarray
    placement_soft: np.ndarray
    segment_x_category: np.ndarray  #: [segment, true category]
    publisher_x_device: np.ndarray
    geo_x_daypart: np.ndarray  #: [geo, hour // 6]
    creative: np.ndarray


class Marketplace:
    """The static side of the simulation: who advertises what, and how clicks convert."""

    def __init__(self, cfg: SimConfig):
        self.cfg = cfg
        rng = np.random.default_rng([cfg.seed, 1])
        self._build_advertisers(rng)
        self._build_setups(rng)
        self._build_features(rng)
        self.effects = self._build_effects(rng)
        self._calibrate(np.random.default_rng([cfg.seed, 2]))

    # -- structure ---------------------------------------------------------------------------
    def _build_advertisers(self, rng: np.random.Generator) -> None:
        cfg = self.cfg
        n = cfg.advertisers
        self.advertiser_ids = [f"adv{i:04d}" for i in range(n)]
        self.advertiser_type = rng.integers(0, len(TYPE_NAMES), n)
        self.advertiser_traffic = rng.lognormal(0.0, 1.0, n)
        self.advertiser_traffic /= self.advertiser_traffic.sum()
        lo, hi = cfg.campaigns_per_advertiser
        self.campaigns_per_adv = rng.integers(lo, hi + 1, n)
        self.campaign_start = np.concatenate([[0], np.cumsum(self.campaigns_per_adv)[:-1]])
        n_campaigns = int(self.campaigns_per_adv.sum())
        self.campaign_ids = [f"cmp{i:05d}" for i in range(n_campaigns)]
        lo, hi = cfg.creatives_per_campaign
        self.creatives_per_campaign = rng.integers(lo, hi + 1, n_campaigns)
        self.creative_start = np.concatenate([[0], np.cumsum(self.creatives_per_campaign)[:-1]])
        self.creative_ids = [f"cr{i:06d}" for i in range(int(self.creatives_per_campaign.sum()))]

    def _build_setups(self, rng: np.random.Generator) -> None:
        cfg = self.cfg
        lo, hi = cfg.setups_per_advertiser
        self.setups_per_adv = rng.integers(lo, hi + 1, cfg.advertisers)
        self.setup_start = np.concatenate([[0], np.cumsum(self.setups_per_adv)[:-1]])
        self.setup_advertiser = np.repeat(np.arange(cfg.advertisers), self.setups_per_adv)
        n = self.setup_advertiser.size
        self.setup_ids = [f"set{i:05d}" for i in range(n)]
        shares = np.array([c[2] for c in CATEGORIES.values()])
        self.setup_category = rng.choice(len(CATEGORY_NAMES), n, p=shares / shares.sum())
        medians = np.array([c[0] for c in CATEGORIES.values()])[self.setup_category]
        sds = np.array([c[1] for c in CATEGORIES.values()])[self.setup_category]
        type_effect = np.array(list(ADVERTISER_TYPES.values()))[
            self.advertiser_type[self.setup_advertiser]
        ]
        log_cvr = np.log(medians) + type_effect + sds * rng.standard_normal(n)
        self.base_cvr = np.clip(np.exp(log_cvr), cfg.min_cvr, cfg.max_cvr)
        #: The task whose specific effects a setup's clicks carry: its class at the start.
        self.setup_hard_group = self.base_cvr <= cfg.alpha
        drifting = rng.random(n) < cfg.drift_share
        self.setup_drift = np.where(drifting, cfg.drift_sd * rng.standard_normal(n), 0.0)
        # Tags: right for most setups, a random other value for a `tag_noise` share.
        self.category_tag = self.setup_category.copy()
        self.type_tag = self.advertiser_type[self.setup_advertiser].copy()
        wrong = rng.random(n) < cfg.tag_noise
        self.category_tag[wrong] = (
            self.setup_category[wrong] + rng.integers(1, len(CATEGORY_NAMES), wrong.sum())
        ) % len(CATEGORY_NAMES)
        self.type_tag[wrong] = (
            self.type_tag[wrong] + rng.integers(1, len(TYPE_NAMES), wrong.sum())
        ) % len(TYPE_NAMES)
        self.tag_is_wrong = wrong
        self.delay_median_ms = (
            np.array([c[3] for c in CATEGORIES.values()])[self.setup_category] * 60_000.0
        )

    def _build_features(self, rng: np.random.Generator) -> None:
        cfg = self.cfg
        self.segment_pmf = zipf_pmf(cfg.user_segments, 0.8, rng)
        self.device_pmf = np.array([0.62, 0.30, 0.06, 0.02])
        self.os_pmf = np.array([0.45, 0.30, 0.12, 0.07, 0.02, 0.04])
        self.geo_pmf = zipf_pmf(cfg.geos, 1.0, rng)
        self.publisher_pmf = zipf_pmf(cfg.publishers, 1.1, rng)
        self.placement_pmf = zipf_pmf(cfg.placements, 0.7, rng)
        self.segment_names = [f"seg{i:02d}" for i in range(cfg.user_segments)]
        self.geo_names = [f"geo{i:02d}" for i in range(cfg.geos)]
        self.publisher_names = [f"pub{i:03d}" for i in range(cfg.publishers)]
        self.placement_names = [f"pl{i:02d}" for i in range(cfg.placements)]

    def _build_effects(self, rng: np.random.Generator) -> Effects:
        cfg = self.cfg
        s, sp, it = cfg.shared_sd, cfg.specific_sd, cfg.interaction_sd

        def table(sd: float, *shape: int) -> np.ndarray:
            return sd * rng.standard_normal(shape)

        hour = np.arange(24)
        return Effects(
            segment_shared=table(s, cfg.user_segments),
            device_shared=table(s, len(DEVICES)),
            geo_shared=table(s, cfg.geos),
            hour_shared=s * np.sin(2 * np.pi * (hour - 15) / 24),
            publisher_shared=table(s, cfg.publishers),
            recency_shared=-s,
            segment_hard=table(sp, cfg.user_segments),
            publisher_hard=table(sp, cfg.publishers),
            segment_soft=table(sp, cfg.user_segments),
            placement_soft=table(sp, cfg.placements),
            segment_x_category=table(it, cfg.user_segments, len(CATEGORY_NAMES)),
            publisher_x_device=table(it, cfg.publishers, len(DEVICES)),
            geo_x_daypart=table(it, cfg.geos, 4),
            creative=table(it, len(self.creative_ids)),
        )

    # -- the true logit ----------------------------------------------------------------------
    def shared_logit(self, f: dict[str, np.ndarray]) -> np.ndarray:
        """The user and context effects every setup shares (before ``shared_strength``); the
        true CTR of an ad request shares them too (``simulator.auctions``)."""
        e = self.effects
        recency = (np.log1p(f["recency_days"]) - 1.75) / 0.85
        return (
            e.segment_shared[f["segment"]]
            + e.device_shared[f["device"]]
            + e.geo_shared[f["geo"]]
            + e.hour_shared[f["hour"]]
            + e.publisher_shared[f["publisher"]]
            + e.recency_shared * recency
        )

    def feature_logit(self, f: dict[str, np.ndarray]) -> np.ndarray:
        """Every logit term except the setup's offset, for click feature index arrays ``f``."""
        e, cfg = self.effects, self.cfg
        hard = self.setup_hard_group[f["setup"]]
        specific = np.where(
            hard,
            e.segment_hard[f["segment"]] + e.publisher_hard[f["publisher"]],
            e.segment_soft[f["segment"]] + e.placement_soft[f["placement"]],
        )
        interactions = (
            e.segment_x_category[f["segment"], self.setup_category[f["setup"]]]
            + e.publisher_x_device[f["publisher"], f["device"]]
            + e.geo_x_daypart[f["geo"], f["hour"] // 6]
            + e.creative[f["creative"]]
        )
        return cfg.shared_strength * self.shared_logit(f) + specific + interactions

    def draw_features(self, setup: np.ndarray, hour: np.ndarray, rng) -> dict[str, np.ndarray]:
        """Draw user, context and ad features for clicks on ``setup`` at ``hour`` of day."""
        return self.draw_ads(setup, rng) | self.draw_context(hour, rng)

    def draw_ads(self, setup: np.ndarray, rng) -> dict[str, np.ndarray]:
        """The advertiser of each setup, and one of its campaigns and creatives at random."""
        n = setup.size
        adv = self.setup_advertiser[setup]
        campaign = self.campaign_start[adv] + (rng.random(n) * self.campaigns_per_adv[adv]).astype(
            np.int64
        )
        creative = self.creative_start[campaign] + (
            rng.random(n) * self.creatives_per_campaign[campaign]
        ).astype(np.int64)
        return {"setup": setup, "advertiser": adv, "campaign": campaign, "creative": creative}

    def draw_context(self, hour: np.ndarray, rng) -> dict[str, np.ndarray]:
        """User and context features of ``hour.size`` clicks or requests at ``hour`` of day."""
        n = hour.size
        return {
            "segment": rng.choice(self.cfg.user_segments, n, p=self.segment_pmf),
            "device": rng.choice(len(DEVICES), n, p=self.device_pmf),
            "os": rng.choice(len(OSES), n, p=self.os_pmf),
            "geo": rng.choice(self.cfg.geos, n, p=self.geo_pmf),
            "publisher": rng.choice(self.cfg.publishers, n, p=self.publisher_pmf),
            "placement": rng.choice(self.cfg.placements, n, p=self.placement_pmf),
            "hour": hour,
            "recency_days": np.round(rng.exponential(7.0, n), 1),
        }

    # -- configured CVR and its offsets ------------------------------------------------------
    @property
    def n_setups(self) -> int:
        return len(self.setup_ids)

    def peer_groups(self) -> list[str]:
        """Each setup's peer group as the stabilizer sees it: ``type/category`` of its tags."""
        return [
            f"{TYPE_NAMES[t]}/{CATEGORY_NAMES[c]}"
            for t, c in zip(self.type_tag, self.category_tag, strict=True)
        ]

    def cvr(self, setup: np.ndarray | int, t_ms: np.ndarray | int) -> np.ndarray:
        """The configured CVR of ``setup`` at event time ``t_ms`` (mean true probability)."""
        frac = np.clip(
            (np.asarray(t_ms) - self.cfg.start_ms) / (self.cfg.end_ms - self.cfg.start_ms), 0, 1
        )
        value = self.base_cvr[setup] * np.exp(self.setup_drift[setup] * frac)
        return np.clip(value, self.cfg.min_cvr, self.cfg.max_cvr)

    def is_hard(self, setup: np.ndarray | int, t_ms: np.ndarray | int) -> np.ndarray:
        """The true class at ``t_ms``: hard when the configured CVR is at most alpha."""
        return self.cvr(setup, t_ms) <= self.cfg.alpha

    def _calibrate(self, rng: np.random.Generator) -> None:
        """Solve each setup's logit offset so the mean true probability is its configured CVR."""
        knots = int(np.ceil(self.cfg.days)) + 1
        self.knot_ms = np.linspace(self.cfg.start_ms, self.cfg.end_ms, knots)
        self.offsets = np.empty((self.n_setups, knots))
        from simulator.traffic import hour_weights

        hours = rng.choice(24, CALIBRATION_DRAWS, p=hour_weights(self.cfg.seasonality))
        for s in range(self.n_setups):
            f = self.draw_features(np.full(CALIBRATION_DRAWS, s), hours, rng)
            z = self.feature_logit(f) + self.cfg.noise_sd * rng.standard_normal(CALIBRATION_DRAWS)
            targets = self.cvr(s, self.knot_ms) if self.setup_drift[s] else self.cvr(s, 0)
            solved = solve_offsets(z, np.atleast_1d(targets))
            self.offsets[s] = solved if self.setup_drift[s] else solved[0]

    def offset(self, setup: np.ndarray, t_ms: np.ndarray) -> np.ndarray:
        """The logit offset of each click's setup at its time (linear between daily knots)."""
        pos = np.clip(
            (t_ms - self.cfg.start_ms) / (self.knot_ms[1] - self.knot_ms[0]),
            0,
            len(self.knot_ms) - 1,
        )
        lo = np.minimum(pos.astype(np.int64), len(self.knot_ms) - 2)
        w = pos - lo
        return (1 - w) * self.offsets[setup, lo] + w * self.offsets[setup, lo + 1]


def solve_offsets(z: np.ndarray, targets: np.ndarray, iterations: int = 30) -> np.ndarray:
    """For each target t, the b with mean(sigmoid(b + z)) == t (Newton's method on b)."""
    b = np.log(targets / (1 - targets)) - z.mean()
    for _ in range(iterations):
        p = expit(b[:, None] + z[None, :])
        mean = p.mean(axis=1)
        slope = (p * (1 - p)).mean(axis=1)
        step = (mean - targets) / np.maximum(slope, 1e-12)
        b = b - np.clip(step, -2, 2)
        if np.max(np.abs(step)) < 1e-9:
            break
    return b
