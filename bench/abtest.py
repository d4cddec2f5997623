"""Auctions a minute of the simulated A/B test, models of the reference size scoring every
candidate.

    python -m bench.abtest [--days 1] [--requests-per-day 400000]

Runs ``abtest.experiment.run`` on the default marketplace: an A/B day (single-task control,
multi-task variant, half of the setups routed hard) and an A/A day (one model, one graph call
for both arms), with models of the reference configuration (their weights do not change the
cost). Prints one JSON line last: ``auctions_per_minute`` (the A/B's; target >= 1,000,000),
``aa_auctions_per_minute`` and ``scoring_share`` (the A/B's time spent in the graphs).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from abtest.experiment import Arm, run  # noqa: E402
from abtest.scoring import Scorer  # noqa: E402
from bench.training import REFERENCE  # noqa: E402
from model.dcn import SINGLE_TASK, build  # noqa: E402
from simulator import Marketplace, SimConfig  # noqa: E402
from simulator.auctions import Funnel  # noqa: E402
from simulator.config import AuctionConfig  # noqa: E402
from simulator.tables import Vocab  # noqa: E402
from simulator.traffic import generate  # noqa: E402


class Timed:
    """A scorer that adds up the time spent in it."""

    def __init__(self, scorer: Scorer):
        self.scorer, self.seconds = scorer, 0.0

    def __call__(self, inputs, hard):
        started = time.perf_counter()
        out = self.scorer(inputs, hard)
        self.seconds += time.perf_counter() - started
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--requests-per-day", type=int, default=AuctionConfig().requests_per_day)
    args = parser.parse_args()
    market = Marketplace(SimConfig(clicks=20_000))
    funnel = Funnel(market, AuctionConfig(requests_per_day=args.requests_per_day))
    sample = Vocab(market).model_inputs(next(generate(market)).features)
    control = build(replace(REFERENCE, tasks=SINGLE_TASK, loss_weights=(1.0,)), sample)
    variant = build(REFERENCE, sample, {"soft": 0.03, "hard": 0.003})
    hard_setups = np.random.default_rng(0).random(market.n_setups) < 0.35
    hard = lambda t_ms: hard_setups  # noqa: E731
    scorers = {
        "control": Timed(Scorer.of_model(control, "single-task")),
        "variant": Timed(Scorer.of_model(variant, "multi-task")),
    }
    figures = {}
    for name, arms in (
        (
            "ab",
            (Arm("control", scorers["control"], hard), Arm("variant", scorers["variant"], hard)),
        ),
        (
            "aa",
            (Arm("control", scorers["control"], hard), Arm("variant", scorers["control"], hard)),
        ),
    ):
        for scorer in scorers.values():
            scorer.seconds = 0.0
        started = time.perf_counter()
        outcomes = run(funnel, arms, market.cfg.end_ms, args.days, seed=1)
        seconds = time.perf_counter() - started
        figures[name] = {
            "auctions_per_minute": round(sum(o.requests for o in outcomes) / seconds * 60),
            "scoring_share": round(sum(s.seconds for s in scorers.values()) / seconds, 3),
            "auctions": sum(o.requests for o in outcomes),
            "seconds": round(seconds, 1),
        }
    print(
        json.dumps(
            {
                "auctions_per_minute": figures["ab"]["auctions_per_minute"],
                "aa_auctions_per_minute": figures["aa"]["auctions_per_minute"],
                "scoring_share": figures["ab"]["scoring_share"],
                "candidates_per_auction": funnel.cfg.candidates,
                "target_auctions_per_minute": 1_000_000,
                "runs": figures,
            }
        )
    )


if __name__ == "__main__":
    main()
