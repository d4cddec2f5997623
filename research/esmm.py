"""``rarecvr research --esmm``: entire-space CVR models against today's multi-task model, in the
style of O'Brien et al. (2021), on simulated impressions (``simulator.impressions``).

Variants, all multi-task (hard and soft towers, W = 0.5 each) on the same trunk:

- **MTL**: today's model, trained on clicks only (``auto_epochs`` passes, the last tenth of
  the clicks picking the epoch, as the research's models do: one pass over the clicks is far
  fewer steps than one pass over the impressions);
- **+ CTR head**: a CTR tower on the shared trunk, trained on every impression (shared bottom);
- **ESMM**: + the click-and-convert loss on every impression (``pCTCVR = pCTR * pCVR``);
- **ESMM without the CVR loss**: the CVR towers learn only through pCTCVR (Ma et al.'s ESMM);
- **IPW**: the CVR loss on every impression, each click weighted by 1/pCTR (clipped, gradients
  stopped), as ESCM2's inverse-propensity estimator.

The hard population is scored on the test days' clicks (drawn labels, as today) and over all
their impressions, where the truth says what a click would have converted to: the log loss of
pCVR against the true CVR of every impression (a cross-entropy with soft labels), whose RIG is
the entire-space RIG. Lifts over MTL come with paired bootstrap intervals; the oracle (the
true CVR) is beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from model import metrics
from model.dcn import ModelConfig
from model.training import auto_epochs, fit, predict
from rarecvr.units import DAY_MS
from simulator import Marketplace, SimConfig
from simulator.auctions import Funnel
from simulator.config import AuctionConfig
from simulator.impressions import impressions
from simulator.tables import SCHEMA, Vocab

ENTIRE_SPACE = {"ctr_weight": 1.0, "ctcvr_weight": 1.0}
VARIANTS: dict[str, dict] = {
    "MTL": {},
    "+ CTR head": {"ctr_weight": 1.0},
    "ESMM": ENTIRE_SPACE,
    "ESMM without the CVR loss": ENTIRE_SPACE | {"cvr_loss": "none"},
    "IPW": {"ctr_weight": 1.0, "cvr_loss": "ipw"},
}
#: The variant rarecvr would train by default, if the study supports it.
CANDIDATE = "ESMM"


@dataclass(frozen=True)
class EsmmPlan:
    train_days: int = 10
    test_days: int = 3
    requests_per_day: int = 1_000_000
    advertisers: int = 300
    hash_buckets: int = 100_000
    batch: int = 4096
    bootstrap_reps: int = 200
    seed: int = 7

    @classmethod
    def quick(cls) -> EsmmPlan:
        return cls(train_days=4, test_days=1, hash_buckets=20_000, bootstrap_reps=100)


@dataclass
class ImpressionSet:
    inputs: dict
    clicked: np.ndarray
    converted: np.ndarray
    true_cvr: np.ndarray
    hard: np.ndarray

    def part(self, rows) -> ImpressionSet:
        return ImpressionSet(
            {k: v[rows] for k, v in self.inputs.items()},
            self.clicked[rows],
            self.converted[rows],
            self.true_cvr[rows],
            self.hard[rows],
        )


def prepare(plan: EsmmPlan) -> tuple[ImpressionSet, ImpressionSet]:
    """Train and test impressions, each routed by its setup's true class at its time (the
    routing is not what this study compares: every variant gets the same)."""
    days = plan.train_days + plan.test_days
    market = Marketplace(SimConfig(seed=plan.seed, advertisers=plan.advertisers, days=days))
    funnel = Funnel(market, AuctionConfig(requests_per_day=plan.requests_per_day))
    ts, everything = impression_set(funnel, market.cfg.start_ms, days, plan.seed, market.is_hard)
    cut = int(np.searchsorted(ts, market.cfg.start_ms + plan.train_days * DAY_MS))
    return everything.part(slice(0, cut)), everything.part(slice(cut, None))


def impression_set(
    funnel: Funnel,
    start_ms: int,
    days: float,
    seed: int,
    hard: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, ImpressionSet]:
    """The impressions of ``days`` from ``start_ms`` in time order, as model inputs, with each
    row's task ``hard(setup, ts_ms)``; and their times."""
    chunks = list(impressions(funnel, start_ms, days, seed))

    def column(get) -> np.ndarray:
        return np.concatenate([get(c) for c in chunks])

    ts = column(lambda c: c.ts_ms)
    features = {k: column(lambda c, k=k: c.features[k]) for k in chunks[0].features}
    return ts, ImpressionSet(
        Vocab(funnel.market).model_inputs(features),
        column(lambda c: c.clicked),
        column(lambda c: c.converted),
        column(lambda c: c.true_cvr),
        hard(features["setup"], ts),
    )


def train(plan: EsmmPlan, name: str, train_set: ImpressionSet, seed: int = 1):
    """Variant ``name`` fitted on ``train_set`` (its clicks, for a model without a CTR tower)."""
    config = replace(
        ModelConfig(SCHEMA, hash_buckets=plan.hash_buckets, seed=seed), **VARIANTS[name]
    )
    if not config.has_ctr:  # clicks only: as many passes as the research's models get
        clicks = train_set.part(np.flatnonzero(train_set.clicked))
        n = clicks.clicked.size
        cut = n - n // 10  # the last tenth picks the epoch
        fitted, held_out = clicks.part(slice(0, cut)), clicks.part(slice(cut, None))
        return fit(
            config,
            fitted.inputs,
            fitted.converted.astype(np.float32),
            fitted.hard,
            epochs=auto_epochs(n),
            batch=plan.batch,
            validation=(held_out.inputs, held_out.converted.astype(np.float32), held_out.hard),
        )
    return fit(
        config,
        train_set.inputs,
        train_set.converted.astype(np.float32),
        train_set.hard,
        batch=plan.batch,
        clicked=train_set.clicked.astype(np.float32),
    )


def run(plan: EsmmPlan, progress: Callable[[str], None] = print) -> dict:
    """Train every variant and score it on the hard population of the test days."""
    train_set, test_set = prepare(plan)
    progress(
        f"{train_set.clicked.size:,} train impressions ({int(train_set.clicked.sum()):,} "
        f"clicks), {test_set.clicked.size:,} test"
    )
    hard = test_set.part(np.flatnonzero(test_set.hard))
    clicks = np.flatnonzero(hard.clicked)
    scores = {}
    for name in VARIANTS:
        model = train(plan, name, train_set)
        scores[name] = predict(model, hard.inputs)["hard"]
        progress(f"{name}: trained")
    y_clicks = hard.converted[clicks].astype(np.float64)
    figures = {"variants": {}, "hard_test_impressions": int(hard.clicked.size)}
    for name, p in scores.items():
        figures["variants"][name] = {
            "rig_clicks": metrics.rig(y_clicks, p[clicks]) if y_clicks.sum() else None,
            "rig_entire_space": metrics.rig(hard.true_cvr, p),
            "calibration_entire_space": float(p.mean() / hard.true_cvr.mean()),
        }
    figures["oracle"] = {
        "rig_clicks": metrics.rig(y_clicks, hard.true_cvr[clicks]) if y_clicks.sum() else None,
        "rig_entire_space": metrics.rig(hard.true_cvr, hard.true_cvr),
    }
    figures["hard_test_clicks"] = int(clicks.size)
    figures["hard_test_conversions"] = int(y_clicks.sum())
    reps = plan.bootstrap_reps
    for name in VARIANTS:
        if name == "MTL":
            continue
        figures["variants"][name]["lift_clicks"] = (
            metrics.paired_bootstrap_comparison(
                metrics.rig, y_clicks, scores[name][clicks], scores["MTL"][clicks], reps=reps
            )
            if y_clicks.sum()
            else None
        )
        figures["variants"][name]["lift_entire_space"] = metrics.paired_bootstrap_comparison(
            metrics.rig, hard.true_cvr, scores[name], scores["MTL"], reps=reps
        )
    return figures


def summary_json(figures: dict) -> dict:
    """The JSON line's figures: ESMM's RIG lift over MTL on clicks and over all impressions,
    with intervals, and every variant's entire-space RIG."""
    esmm = figures["variants"][CANDIDATE]

    out = {}
    for key, entry in (
        ("esmm_rig", esmm.get("lift_clicks")),
        ("esmm_entire_space_rig", esmm.get("lift_entire_space")),
    ):
        entry = entry or {}
        out |= {
            f"{key}_lift_vs_mtl": entry.get("lift"),
            f"{key}_lift_vs_mtl_ci": [entry.get("ci_low"), entry.get("ci_high")],
            f"{key}_diff_vs_mtl": entry.get("diff"),
            f"{key}_diff_vs_mtl_ci": [entry.get("diff_ci_low"), entry.get("diff_ci_high")],
            f"{key}_mtl_worse_than_constant": None if not entry else entry["baseline"] <= 0,
        }
    return out | {
        "entire_space_rig": {n: v["rig_entire_space"] for n, v in figures["variants"].items()},
        "clicks_rig": {n: v["rig_clicks"] for n, v in figures["variants"].items()},
        "oracle": figures["oracle"],
        "hard_test_clicks": figures["hard_test_clicks"],
        "hard_test_conversions": figures["hard_test_conversions"],
    }
