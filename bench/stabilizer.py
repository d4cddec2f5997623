"""The stabilizer's policy against the naive threshold rule on a drifting simulated marketplace.

    python -m bench.stabilizer [--clicks 5000000] [--days 28] [--seed 7 | --seed 7,8,9,10,11]

Every setup is re-decided every hour of event time from the same evidence for both rules: its
decayed clicks (7-day half-life), decayed conversions counted when they happen, and the clicks
too recent to have converted discounted by the delay distribution observed so far (the
estimator of ``docs/streams.md``). The naive rule is hard iff that CVR is at most alpha. The
truth is the simulator's configured CVR at that hour. Prints one JSON line last:
``flip_rate_vs_naive``, ``accuracy``, ``naive_accuracy``, ``cold_start_accuracy`` (a setup's first
day), the reassignment delay after a true crossing, and the hard share. Nearly every simulated
setup starts in the first hour, from no evidence, so the first week is mostly cold starts and
their corrections; ``steady_flip_rate_vs_naive``, ``steady_accuracy`` and
``steady_naive_accuracy`` are the same figures from day 7 on, the regime of a marketplace that
has been running. ``click_weighted_accuracy`` and ``naive_click_weighted_accuracy`` weigh each
setup-hour by its clicks in that hour: a wrong task costs in proportion to the traffic it
routes.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np

from rarecvr.units import HOUR_MS
from simulator import Marketplace, SimConfig
from simulator.traffic import setup_clicks
from stabilizer.policy import PolicyParams
from stabilizer.replay import HourlyCounts, replay

STEADY_FROM_H = 7 * 24


def hourly_counts(market: Marketplace) -> HourlyCounts:
    """The simulated traffic's clicks and conversions per setup and hour."""
    hours = int(np.ceil(market.cfg.days * 24))
    return HourlyCounts.of(setup_clicks(market), market.n_setups, hours, market.cfg.start_ms)


def percentile(values: list, q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def changes(task: np.ndarray, from_h: int = 0) -> int:
    """Changes of task between consecutive hours from hour ``from_h`` on (not a first answer).

    >>> changes(np.array([[-1, 0, 1, 1, 0], [1, 1, 1, 0, 0]]))
    3
    >>> changes(np.array([[-1, 0, 1, 1, 0], [1, 1, 1, 0, 0]]), from_h=3)
    2
    """
    before, after = task[:, max(from_h, 1) - 1 : -1], task[:, max(from_h, 1) :]
    return int(((before >= 0) & (after != before)).sum())


def evaluate(
    market: Marketplace, counts: tuple, params: PolicyParams, steady_from_h: int = STEADY_FROM_H
) -> dict:
    """Replay both rules hour by hour over ``hourly_counts(market)``; the benchmark's figures,
    and the same figures from ``steady_from_h`` on (``steady_*``: the first answers and the
    first week's corrections of every setup of the simulated start left out)."""
    clicks = counts.clicks
    cfg = market.cfg
    n, hours = clicks.shape
    first_hour = np.where(clicks.sum(1) > 0, np.argmax(clicks > 0, axis=1), hours)
    policy_task, naive_task = replay(counts, market.peer_groups(), params, cfg.start_ms)
    ends_ms = cfg.start_ms + (np.arange(hours) + 1) * HOUR_MS
    truth = market.is_hard(np.arange(n)[:, None], ends_ms[None, :])
    seen_mask = policy_task >= 0
    day_one = seen_mask & (np.arange(hours)[None, :] < first_hour[:, None] + 24)
    steady = seen_mask & (np.arange(hours)[None, :] >= steady_from_h)

    def accuracy(task: np.ndarray, mask: np.ndarray, weights: np.ndarray | None = None) -> float:
        return float(
            np.average(
                ((task == 1) == truth)[mask], weights=None if weights is None else weights[mask]
            )
        )

    crossing_delays, never = [], 0
    for s in np.flatnonzero(truth.any(1) & ~truth.all(1)):
        cross = int(np.flatnonzero(truth[s] != truth[s, 0])[0])
        if cross <= first_hour[s]:
            continue
        caught = np.flatnonzero(policy_task[s, cross:] == truth[s, cross])
        if caught.size:
            crossing_delays.append(int(caught[0]))
        else:
            never += 1
    flips = {"policy": changes(policy_task), "naive": changes(naive_task)}
    result = {
        "flip_rate_vs_naive": round(flips["policy"] / max(flips["naive"], 1), 4),
        "accuracy": round(accuracy(policy_task, seen_mask), 4),
        "naive_accuracy": round(accuracy(naive_task, seen_mask), 4),
        "cold_start_accuracy": round(accuracy(policy_task, day_one), 4),
        "naive_cold_start_accuracy": round(accuracy(naive_task, day_one), 4),
        "flips": flips["policy"],
        "naive_flips": flips["naive"],
        "setups": n,
        "setup_hours": int(seen_mask.sum()),
        "hard_share": round(float((policy_task == 1)[seen_mask].mean()), 4),
        "true_hard_share": round(float(truth[seen_mask].mean()), 4),
        "crossings": len(crossing_delays) + never,
        "reassign_delay_h_p50": percentile(crossing_delays, 50),
        "reassign_delay_h_p90": percentile(crossing_delays, 90),
        "reassign_delay_h_max": percentile(crossing_delays, 100),
        "crossings_not_reassigned_by_end": never,
        "click_weighted_accuracy": round(accuracy(policy_task, seen_mask, clicks), 4),
        "naive_click_weighted_accuracy": round(accuracy(naive_task, seen_mask, clicks), 4),
        "steady_from_h": steady_from_h,
        "steady_flip_rate_vs_naive": round(
            changes(policy_task, steady_from_h) / max(changes(naive_task, steady_from_h), 1), 4
        ),
        "steady_accuracy": round(accuracy(policy_task, steady), 4),
        "steady_naive_accuracy": round(accuracy(naive_task, steady), 4),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=5_000_000)
    parser.add_argument("--days", type=float, default=28.0)
    parser.add_argument(
        "--seed",
        default="7",
        help="a seed, or several (7,8,9): then each seed's figures in by_seed "
        "and the top-level ones their mean",
    )
    defaults = PolicyParams()
    parser.add_argument("--confidence", type=float, default=defaults.confidence)
    parser.add_argument("--online-margin", type=float, default=defaults.online_margin)
    parser.add_argument("--dwell-hours", type=float, default=defaults.min_dwell_ms / HOUR_MS)
    parser.add_argument("--tag-noise", type=float, default=defaults.tag_noise)
    args = parser.parse_args()
    params = PolicyParams(
        alpha=SimConfig().alpha,
        confidence=args.confidence,
        online_margin=args.online_margin,
        min_dwell_ms=int(args.dwell_hours * HOUR_MS),
        tag_noise=args.tag_noise,
    )
    started = time.perf_counter()
    by_seed = {}
    for seed in (int(s) for s in args.seed.split(",")):
        market = Marketplace(replace(SimConfig(), clicks=args.clicks, days=args.days, seed=seed))
        by_seed[seed] = evaluate(market, hourly_counts(market), params)
    results = list(by_seed.values())
    result = results[0] if len(results) == 1 else mean_of(results) | {"by_seed": by_seed}
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


def mean_of(results: list[dict]) -> dict:
    """Each figure's mean over several seeds' results (None where a seed has none)."""
    means = {}
    for key in results[0]:
        values = [r[key] for r in results]
        means[key] = None if None in values else round(float(np.mean(values)), 4)
    return means


if __name__ == "__main__":
    main()
