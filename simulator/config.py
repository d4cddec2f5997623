"""The simulator's parameters. Defaults follow the paper's facts; see ``docs/simulator.md``.

They were fixed before any model was compared on them and must not be retuned to favour one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rarecvr.units import DAY_MS, HOUR_MS, MINUTE_MS

#: Conversion categories: (median CVR, log-sd of CVR across setups, share of setups,
#: median conversion delay in minutes). Their mixture spans about 0.02% to 40%.
CATEGORIES: dict[str, tuple[float, float, float, float]] = {
    "landing_page_view": (0.15, 0.6, 0.15, 2.0),
    "add_to_cart": (0.05, 0.7, 0.15, 30.0),
    "sign_up": (0.03, 0.8, 0.20, 60.0),
    "lead": (0.015, 0.9, 0.15, 360.0),
    "install": (0.008, 0.9, 0.15, 180.0),
    "purchase": (0.0025, 1.0, 0.20, 2160.0),
}

#: Advertiser types and their multiplicative effect on a setup's CVR (log scale).
ADVERTISER_TYPES: dict[str, float] = {
    "retail": 0.0,
    "gaming": 0.2,
    "finance": -0.4,
    "travel": -0.2,
    "education": 0.1,
    "health": -0.1,
}


@dataclass(frozen=True)
class Faults:
    """Rates of injected faults, each a share of valid events (default: none)."""

    duplicate: float = 0.0  #: the same event (same id) sent again a little later
    out_of_order: float = 0.0  #: sent up to ``out_of_order_max_ms`` after its turn
    late: float = 0.0  #: sent ``late_min_ms`` to ``late_max_ms`` after its turn
    malformed: float = 0.0  #: extra records that break the event contract
    out_of_order_max_ms: int = 5 * MINUTE_MS
    late_min_ms: int = 1 * HOUR_MS
    late_max_ms: int = 12 * HOUR_MS


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines a simulated marketplace and its traffic."""

    seed: int = 7
    # Marketplace
    advertisers: int = 300
    setups_per_advertiser: tuple[int, int] = (1, 5)
    campaigns_per_advertiser: tuple[int, int] = (1, 8)
    creatives_per_campaign: tuple[int, int] = (1, 4)
    min_cvr: float = 0.0002
    max_cvr: float = 0.40
    alpha: float = 0.01  #: offline threshold: a setup with CVR <= alpha is hard
    tag_noise: float = 0.10  #: share of setups whose type and category tags are wrong
    # Features
    user_segments: int = 64
    geos: int = 40
    publishers: int = 500
    placements: int = 24
    # True logit: shared effects (x shared_strength), task-specific effects, interactions, noise
    shared_strength: float = 1.0
    shared_sd: float = 0.35  #: sd of each shared user/context effect
    specific_sd: float = 0.35  #: sd of each hard-only or soft-only effect
    interaction_sd: float = 0.30  #: sd of each pairwise interaction effect
    noise_sd: float = 0.20  #: per-click noise on the logit (no model can learn it)
    # Time
    start_ms: int = 1_767_225_600_000  #: 2026-01-01T00:00:00Z
    days: float = 14.0
    clicks: int = 1_000_000
    seasonality: float = 0.6  #: amplitude of the daily cycle in click intensity
    attribution_window_ms: int = 7 * DAY_MS
    delay_sigma: float = 1.4  #: log-sd of conversion delays (heavy tailed)
    drift_share: float = 0.2  #: share of setups whose CVR drifts over the horizon
    drift_sd: float = 1.2  #: sd of the total log-CVR change of a drifting setup
    faults: Faults = field(default_factory=Faults)

    @property
    def end_ms(self) -> int:
        return self.start_ms + int(self.days * DAY_MS)


@dataclass(frozen=True)
class AuctionConfig:
    """The auction side of the marketplace (``simulator.auctions``): requests, eligible ads,
    the true CTR, outside competition, and each setup's goal and budget. Fixed before any
    comparison, like :class:`SimConfig`; see ``docs/simulator.md``."""

    seed: int = 11
    requests_per_day: int = 400_000
    candidates: int = 4  #: eligible ads per request (drawn like clicks: by traffic weight)
    users: int = 2_000_000  #: user ids a request comes from (the A/B test hashes them to arms)
    base_ctr: float = 0.02  #: mean true CTR of an impression
    ctr_shared_strength: float = 1.0  #: weight of the CVR's shared user/context effects in it
    ctr_specific_sd: float = 0.30  #: sd of the CTR-only creative and placement effects
    #: a setup's target CPA x base CTR x its CVR, median (currency per impression)
    value_per_impression: float = 1.0
    target_cpa_sd: float = 0.30  #: log-sd of target CPAs around that
    reserve_price: float = 0.10  #: per impression
    outside_median: float = 0.60  #: the best outside bid of a request: log-normal median
    outside_sd: float = 0.80  #: and log-sd
    #: daily budget over the value of all a setup's eligible impressions a day: median, log-sd
    budget_median: float = 0.35
    budget_sd: float = 0.80
