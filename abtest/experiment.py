"""One budget-split A/B run: two arms bidding target-CPA in their own auctions over the days of
the test.

Users are hashed to arms (a salt per seed), so each request belongs to one arm, and each arm
has half of every setup's daily budget and its own pacing: no budget is shared, so neither arm
can starve the other. Every 15 minutes of event time a batch of requests arrives (Poisson, with
the daily cycle of the click traffic); each candidate's bid is

    bid = lambda(arm, setup) * target_cpa(setup) * pCTR * pCVR(arm),

pCTR the true CTR in both arms (so only pCVR differs), pCVR the arm's model, routed by the
arm's task of the setup. Second-price auctions (``abtest.auction``) pick the winners; a won
impression is clicked with the true CTR and a click converts with the true CVR. Besides the
drawn conversions every arm keeps the expected ones (true CTR x CVR of each won impression):
the same KPI without the draw's noise, which the rare hard conversions need at simulated
traffic volumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from abtest.auction import second_price
from abtest.pacing import Pacer
from rarecvr.units import DAY_MS, HOUR_MS, MINUTE_MS
from simulator.auctions import Funnel
from simulator.tables import Vocab
from simulator.traffic import hour_weights

STEP_MS = 15 * MINUTE_MS


@dataclass
class Arm:
    """A model and how it routes: ``hard(t_ms)`` says which setups go to the hard graph then."""

    name: str
    scorer: Callable[[dict, np.ndarray], np.ndarray]
    hard: Callable[[int], np.ndarray]


#: Per-setup sums an arm keeps.
SUMS = (
    "spend",
    "impressions",
    "clicks",
    "conversions",
    "expected_conversions",
    "value",
    "pcvr_won",
    "true_cvr_won",
    "hard_impressions",
)


@dataclass
class ArmOutcome:
    """What one arm bought, per setup, over the test."""

    name: str
    sums: dict[str, np.ndarray]
    requests: int = 0
    auctions_won: int = 0
    budget: np.ndarray = field(default_factory=lambda: np.zeros(0))  #: per setup, whole test


def user_arm(user: np.ndarray, salt: int) -> np.ndarray:
    """0 or 1 for each user id, the same for a user throughout a run (a multiplicative hash)."""
    mixed = (user.astype(np.uint64) + np.uint64(salt)) * np.uint64(0x9E3779B97F4A7C15)
    return ((mixed >> np.uint64(40)) & np.uint64(1)).astype(np.int64)


def within_budget(
    key: np.ndarray, ts_ms: np.ndarray, price: np.ndarray, remaining: np.ndarray
) -> np.ndarray:
    """Which won impressions a bidder can still pay for: in time order, those whose running
    cost stays within its remaining budget (``remaining`` indexed by ``key``). The others are
    not served: the ad server stops a campaign when its budget is gone.

    >>> key, ts_ms = np.array([0, 0, 1, 0]), np.array([1, 2, 3, 4])
    >>> within_budget(key, ts_ms, np.ones(4), remaining=np.array([2.0, 0.5]))
    array([ True,  True, False, False])
    """
    order = np.lexsort((ts_ms, key))
    cost = np.cumsum(price[order])
    starts = np.flatnonzero(np.r_[True, key[order][1:] != key[order][:-1]])
    before = np.repeat(cost[starts] - price[order][starts], np.diff(np.r_[starts, key.size]))
    keep = np.empty(key.size, dtype=bool)
    keep[order] = cost - before <= remaining.ravel()[key[order]]
    return keep


def run(
    funnel: Funnel,
    arms: tuple[Arm, Arm],
    start_ms: int,
    days: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> list[ArmOutcome]:
    """The A/B test from ``start_ms`` for ``days`` days; ``progress`` gets each step's requests."""
    market, cfg = funnel.market, funnel.cfg
    rng = np.random.default_rng([market.cfg.seed, 7, seed])
    salt = int(rng.integers(0, 2**32))
    vocab = Vocab(market)
    n_setups, k = market.n_setups, cfg.candidates
    budget = np.tile(funnel.daily_budget / 2, (2, 1))
    pacer = Pacer(budget)
    outcomes = [
        ArmOutcome(arm.name, {s: np.zeros(n_setups) for s in SUMS}, budget=budget[0] * days)
        for arm in arms
    ]
    weights = hour_weights(market.cfg.seasonality)
    for day in range(days):
        pacer.new_day()
        for step in range(DAY_MS // STEP_MS):
            t0 = start_ms + day * DAY_MS + step * STEP_MS
            share = weights[(t0 // HOUR_MS) % 24] * STEP_MS / HOUR_MS
            n = int(rng.poisson(cfg.requests_per_day * share))
            requests = funnel.requests(t0 + rng.integers(0, STEP_MS, n), rng)
            arm_of_request = user_arm(requests.user, salt)
            candidates = funnel.candidates(requests, rng)
            setup = candidates.features["setup"]
            arm_of = arm_of_request[candidates.request]
            inputs = vocab.model_inputs(candidates.features)
            pcvr = np.empty(len(candidates))
            hard = np.empty(len(candidates), dtype=bool)
            for a, arm in enumerate(arms):
                rows = np.flatnonzero(arm_of == a)
                hard[rows] = arm.hard(t0)[setup[rows]]
            if arms[0].scorer is arms[1].scorer:  # an A/A test: one call for both arms
                pcvr = arms[0].scorer(inputs, hard)
            else:
                for a, arm in enumerate(arms):
                    rows = np.flatnonzero(arm_of == a)
                    pcvr[rows] = arm.scorer({k_: v[rows] for k_, v in inputs.items()}, hard[rows])
            bids = (
                pacer.multipliers()[arm_of, setup]
                * funnel.target_cpa[setup]
                * candidates.true_ctr
                * pcvr
            )
            outside = np.exp(np.log(cfg.outside_median) + cfg.outside_sd * rng.standard_normal(n))
            winner, price = second_price(bids.reshape(n, k), np.maximum(outside, cfg.reserve_price))
            won = np.flatnonzero(winner >= 0)
            row = won * k + winner[won]
            key = arm_of[row] * n_setups + setup[row]
            served = within_budget(key, candidates.ts_ms[row], price[won], pacer.remaining())
            won, row, key = won[served], row[served], key[served]
            clicked = rng.random(row.size) < candidates.true_ctr[row]
            converted = clicked & (rng.random(row.size) < candidates.true_cvr[row])
            expected = candidates.true_ctr[row] * candidates.true_cvr[row]
            step_sums = {
                "spend": price[won],
                "impressions": None,
                "clicks": clicked,
                "conversions": converted,
                "expected_conversions": expected,
                "value": expected * funnel.target_cpa[setup[row]],
                "pcvr_won": pcvr[row],
                "true_cvr_won": candidates.true_cvr[row],
                "hard_impressions": hard[row],
            }
            spend = None
            for name, values in step_sums.items():
                total = np.bincount(key, weights=values, minlength=2 * n_setups).reshape(2, -1)
                for a in range(2):
                    outcomes[a].sums[name] += total[a]
                if name == "spend":
                    spend = total
            pacer.update(spend, share)
            for a in range(2):
                outcomes[a].requests += int((arm_of_request == a).sum())
                outcomes[a].auctions_won += int((arm_of[row] == a).sum())
            if progress is not None:
                progress(n)
    return outcomes
