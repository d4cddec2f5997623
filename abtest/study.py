"""The simulated A/B study: a logged history, two models trained on it, their routing, the
A/B runs over several seeds, the A/A runs that check the intervals, and the paper's KPIs.

The simulator's horizon is the history followed by the test. The models train on the history's
clicks (the organic click stream the rest of rarecvr consumes); the same clicks of the test
days give each model's offline figures on the test period. The stabilizer's policy and the
naive rule are replayed hour by hour over the whole horizon (``stabilizer.replay``), and each
arm routes a setup by the task it had at the end of the hour before. The hard segment is the
setups the stabilizer has as hard when the test starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from abtest import experiment, kpis
from abtest.experiment import Arm, ArmOutcome
from abtest.scoring import Scorer
from model import metrics
from model.dcn import SINGLE_TASK, ModelConfig
from model.tasks import TaskRule
from model.training import fit
from rarecvr.units import DAY_MS, HOUR_MS
from research import esmm
from research.data import Study, simulated
from research.oracle import oracle_figures
from research.study import Plan as TrainingPlan
from research.study import fit_split, validation_split
from simulator import Marketplace, SimConfig
from simulator.auctions import Funnel
from simulator.config import AuctionConfig
from simulator.traffic import setup_clicks
from stabilizer.policy import PolicyParams
from stabilizer.replay import HourlyCounts, replay

#: What the two arms are: the paper's models, or one model routed two ways.
COMPARISONS = {
    "models": "control: the single-task model on all conversions; variant: the multi-task model",
    "routing": "both the multi-task model; control routed by the naive rule, variant by the "
    "stabilizer (does hysteresis pay online?)",
    "esmm": "both multi-task and trained on the history's impressions: control on their clicks "
    "(today's model), variant ESMM on all of them (research/esmm.py)",
}

#: The models each comparison's arms use.
MODELS = {
    "models": ("single-task", "multi-task"),
    "routing": ("multi-task",),
    "esmm": ("multi-task", "esmm"),
}


@dataclass(frozen=True)
class Plan:
    """Everything an A/B study runs; ``quick`` is the version that runs in minutes."""

    history_days: int = 14
    test_days: int = 7
    history_clicks_per_day: int = 150_000
    advertisers: int = 300
    requests_per_day: int = 400_000
    seeds: tuple[int, ...] = (1, 2, 3)
    aa_seeds: int = 20
    hash_buckets: int = 100_000
    epochs: int = 1
    bootstrap_reps: int = 1000
    comparison: str = "models"
    sim_seed: int = 7

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            history_days=10,
            test_days=1,
            history_clicks_per_day=25_000,
            advertisers=100,
            requests_per_day=120_000,
            seeds=(1, 2),
            hash_buckets=20_000,
            epochs=2,
            bootstrap_reps=300,
        )

    @property
    def days(self) -> int:
        return self.history_days + self.test_days

    def sim_config(self) -> SimConfig:
        return SimConfig(
            seed=self.sim_seed,
            advertisers=self.advertisers,
            days=float(self.days),
            clicks=self.history_clicks_per_day * self.days,
        )

    def auction_config(self) -> AuctionConfig:
        return AuctionConfig(requests_per_day=self.requests_per_day)


@dataclass
class Routing:
    """Each setup's task at the end of every hour of the horizon, under both rules."""

    start_ms: int
    policy: np.ndarray  #: (setups, hours): 1 hard, 0 soft, -1 not seen yet (soft)
    naive: np.ndarray

    def at(self, rule: str) -> Callable[[int], np.ndarray]:
        """``hard(t_ms)`` under ``rule``: the tasks of the last hour that ended before t."""
        tasks = self.policy if rule == "stabilizer" else self.naive

        def hard(t_ms: int) -> np.ndarray:
            hour = min(int((t_ms - self.start_ms) // HOUR_MS) - 1, tasks.shape[1] - 1)
            return tasks[:, hour] == 1 if hour >= 0 else np.zeros(tasks.shape[0], dtype=bool)

        return hard

    def of_rows(self, setup: np.ndarray, ts_ms: np.ndarray, rule: str) -> np.ndarray:
        """Each row's task under ``rule`` at its time: its setup's at the end of the hour before."""
        hard = self.at(rule)
        hours = (ts_ms - self.start_ms) // HOUR_MS
        out = np.zeros(setup.size, dtype=bool)
        for hour in np.unique(hours):
            rows = hours == hour
            out[rows] = hard(int(self.start_ms + hour * HOUR_MS))[setup[rows]]
        return out


@dataclass
class Prepared:
    """The marketplace, its auctions, the trained arms' models, and the routing."""

    market: Marketplace
    funnel: Funnel
    study: Study
    routing: Routing
    scorers: dict[str, Scorer]
    offline: dict
    test_start_ms: int


def prepare(
    plan: Plan, log: Callable[[str], None] = print, versions: dict[str, Path] | None = None
) -> Prepared:
    """Simulate the history, replay the stabilizer over it and train both models (or load
    ``versions``: model name -> a registry version directory, instead of training it)."""
    market = Marketplace(plan.sim_config())
    funnel = Funnel(market, plan.auction_config())
    log(f"simulating {market.cfg.clicks:,} clicks over {plan.days} days")
    hours = plan.days * 24
    counts = HourlyCounts.of(setup_clicks(market), market.n_setups, hours, market.cfg.start_ms)
    params = PolicyParams(alpha=market.cfg.alpha)
    policy, naive = replay(counts, market.peer_groups(), params, market.cfg.start_ms)
    routing = Routing(market.cfg.start_ms, policy, naive)
    study = routed(
        simulated(market, TaskRule(alpha=market.cfg.alpha), plan.test_days / plan.days),
        market,
        routing,
    )
    training = TrainingPlan(epochs=plan.epochs, hash_buckets=plan.hash_buckets)
    base = ModelConfig(study.spec, hash_buckets=plan.hash_buckets, shared_layers=2)
    configs = {
        "single-task": replace(base, tasks=SINGLE_TASK, loss_weights=(1.0,)),
        "multi-task": base,
    }
    scorers, offline = {}, {}
    if plan.comparison == "esmm":
        scorers = impression_models(plan, market, funnel, routing, log)
    for name in MODELS[plan.comparison]:
        if name not in scorers:
            scorers[name] = _scorer(name, configs[name], study, training, versions or {}, log)
        offline[name] = offline_figures(scorers[name], study.test)
    test = study.test
    offline["oracle_hard"] = oracle_figures(test.labels[test.hard], test.true_p[test.hard])
    test_start = market.cfg.start_ms + plan.history_days * DAY_MS
    return Prepared(market, funnel, study, routing, scorers, offline, test_start)


def _scorer(name, config, study, training, versions, log) -> Scorer:
    """A registry version's scorer if one was given for ``name``, else a model trained on the
    study's history clicks."""
    if name in versions:
        log(f"loading the {name} model from {versions[name]}")
        return Scorer.of_version(versions[name], name)
    log(f"training the {name} model on {len(study.train):,} history clicks")
    model = fit(
        config,
        *fit_split(study, training),
        epochs=training.epochs,
        batch=training.batch,
        validation=validation_split(study, training),
    )
    return Scorer.of_model(model, name)


def impression_models(plan, market, funnel, routing, log) -> dict[str, Scorer]:
    """The esmm comparison's two models, both on the history's impressions (routed by the
    stabilizer at their time): today's multi-task model on their clicks, ESMM on all."""

    def task(setup: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
        return routing.of_rows(setup, ts_ms, "stabilizer")

    _, history = esmm.impression_set(
        funnel, market.cfg.start_ms, plan.history_days, plan.sim_seed, task
    )
    log(
        f"training on {history.clicked.size:,} history impressions "
        f"({int(history.clicked.sum()):,} clicks)"
    )
    training = esmm.EsmmPlan(hash_buckets=plan.hash_buckets)
    return {
        "multi-task": Scorer.of_model(esmm.train(training, "MTL", history), "multi-task"),
        "esmm": Scorer.of_model(esmm.train(training, "ESMM", history), "esmm"),
    }


def offline_figures(scorer: Scorer, test) -> dict:
    """RIG, AUC and calibration of an arm's pCVR on held-out clicks, per routed population."""
    p = scorer(test.inputs, test.hard)
    out = {}
    for population, mask in (("hard", test.hard), ("soft", ~test.hard)):
        y = test.labels[mask]
        if 0 < y.sum() < y.size:
            out[f"rig_{population}"] = metrics.rig(y, p[mask])
            out[f"auc_{population}"] = metrics.auc(y, p[mask])
            out[f"calibration_{population}"] = metrics.calibration_ratio(y, p[mask])
    return out


def routed(study: Study, market: Marketplace, routing: Routing) -> Study:
    """The study with each click's task as the live trainer takes it: the stabilizer's
    assignment of its setup when it was clicked (not the offline rule's)."""
    chunks = [(setup, ts_ms) for setup, ts_ms, _ in setup_clicks(market)]
    setup = np.concatenate([setup for setup, _ in chunks])
    ts_ms = np.concatenate([ts_ms for _, ts_ms in chunks])
    task = routing.of_rows(setup, ts_ms, "stabilizer")
    cut = len(study.train)
    return replace(
        study,
        train=replace(study.train, hard=task[:cut]),
        test=replace(study.test, hard=task[cut:]),
        about=study.about | {"tasks": "the stabilizer's assignments at click time"},
    )


def arms(prepared: Prepared, comparison: str, aa: bool = False) -> tuple[Arm, Arm]:
    """(control, variant) of a comparison; ``aa``: the control twice."""
    stabilizer = prepared.routing.at("stabilizer")
    if comparison == "models":
        control = Arm("control", prepared.scorers["single-task"], stabilizer)
        variant = Arm("variant", prepared.scorers["multi-task"], stabilizer)
    elif comparison == "esmm":
        control = Arm("control", prepared.scorers["multi-task"], stabilizer)
        variant = Arm("variant", prepared.scorers["esmm"], stabilizer)
    elif comparison == "routing":
        mtl = prepared.scorers["multi-task"]
        control = Arm("control", mtl, prepared.routing.at("naive"))
        variant = Arm("variant", mtl, stabilizer)
    else:
        raise ValueError(f"unknown comparison {comparison!r}; one of {sorted(COMPARISONS)}")
    return (control, replace(control, name="variant")) if aa else (control, variant)


def setup_kpis(runs: list[list[ArmOutcome]], conversions: str) -> kpis.SetupKpis:
    """The (seed, setup) KPI matrices of runs, on ``conversions`` (``expected_conversions`` or
    the drawn ``conversions``)."""

    def stack(arm: int, name: str) -> np.ndarray:
        return np.stack([run[arm].sums[name] for run in runs])

    return kpis.SetupKpis(
        stack(0, "spend"), stack(0, conversions), stack(1, "spend"), stack(1, conversions)
    )


def figures(
    runs: list[list[ArmOutcome]],
    hard: np.ndarray,
    advertiser: np.ndarray,
    reps: int,
    seed: int = 0,
) -> dict:
    """The KPIs of the hard segment and of all setups, on expected and on drawn conversions."""
    rng = np.random.default_rng(seed)
    out = {}
    for basis in ("expected_conversions", "conversions"):
        table = setup_kpis(runs, basis)
        out[basis] = {
            segment: kpis.segment_figures(table, mask, advertiser, reps, rng)
            for segment, mask in (("hard", hard), ("all", np.ones_like(hard)))
        }
    return out


def aa_coverage(
    aa_runs: list[list[ArmOutcome]], hard: np.ndarray, advertiser: np.ndarray, reps: int
) -> dict:
    """For each A/A run alone, whether the 95% interval of each hard-segment figure covers no
    change; the share that do, per figure."""
    covered: dict[str, list[bool]] = {}
    for i, run in enumerate(aa_runs):
        table = setup_kpis([run], "expected_conversions")
        cells = kpis.segment_figures(table, hard, advertiser, reps, np.random.default_rng(i))
        for name, cell in cells["all"].items():
            if isinstance(cell, dict) and "ci" in cell:
                low, high = cell["ci"]
                if np.isfinite(low):
                    covered.setdefault(name, []).append(low <= 0 <= high)
    return {name: float(np.mean(values)) for name, values in covered.items()}


def calibration(run: list[ArmOutcome], hard: np.ndarray) -> dict:
    """Each arm's mean pCVR over the true mean CVR of its won impressions (above 1: the winner's
    curse), on the hard segment and the rest."""
    out = {}
    for arm in run:
        out[arm.name] = {
            segment: float(arm.sums["pcvr_won"][mask].sum() / arm.sums["true_cvr_won"][mask].sum())
            if arm.sums["true_cvr_won"][mask].sum() > 0
            else None
            for segment, mask in (("hard", hard), ("soft", ~hard))
        }
    return out


def run_all(
    plan: Plan, prepared: Prepared, progress: Callable[[int], None] | None = None
) -> dict[str, list[list[ArmOutcome]]]:
    """The A/B runs of every seed and the A/A runs."""
    out = {"ab": [], "aa": []}
    for seed in plan.seeds:
        out["ab"].append(_run(plan, prepared, arms(prepared, plan.comparison), seed, progress))
    for seed in range(plan.aa_seeds):
        pair = arms(prepared, plan.comparison, aa=True)
        out["aa"].append(_run(plan, prepared, pair, 1000 + seed, progress))
    return out


def _run(plan, prepared, pair, seed, progress):
    return experiment.run(
        prepared.funnel, pair, prepared.test_start_ms, plan.test_days, seed, progress
    )


def hard_segment(prepared: Prepared) -> np.ndarray:
    """The setups the stabilizer routes hard when the test starts."""
    return prepared.routing.at("stabilizer")(prepared.test_start_ms)


#: The paper's Table 4 (hard conversion setups), in %: (CPA change, conversion change).
PAPER_TABLE4 = {
    "median": (-2.0, 2.6),
    "spend-weighted": (-3.4, 3.0),
    "group I (top ~30% of spend)": (-5.1, 4.8),
    "group II (top ~50%)": (-4.1, 4.8),
    "group III (top ~70%)": (-2.4, 2.2),
}
#: Table 4's rows as (label, group, aggregate) of ``kpis.segment_figures``.
TABLE4_ROWS = (
    ("median", "all", "median"),
    ("spend-weighted", "all", "spend_weighted"),
    ("group I (top ~30% of spend)", "top_30pct", "spend_weighted"),
    ("group II (top ~50%)", "top_50pct", "spend_weighted"),
    ("group III (top ~70%)", "top_70pct", "spend_weighted"),
)


def flatten(segments: dict) -> dict:
    """``{segment}[_{group}]_{figure}`` and ``..._ci`` keys of ``figures()``'s cells."""
    out = {}
    for segment, groups in segments.items():
        for group, cells in groups.items():
            prefix = segment if group == "all" else f"{segment}_{group}"
            for name, cell in cells.items():
                if isinstance(cell, dict) and "ci" in cell:
                    out[f"{prefix}_{name}"] = _finite(cell["value"])
                    out[f"{prefix}_{name}_ci"] = [_finite(v) for v in cell["ci"]]
    return out


def _finite(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 5)


def summarise(plan: Plan, prepared: Prepared, runs: dict) -> dict:
    """The study's figures: the A/B KPIs (expected conversions; the drawn ones beside), the
    A/A coverage, the models' offline figures, calibration on won impressions, spend."""
    hard = hard_segment(prepared)
    advertiser = prepared.market.setup_advertiser
    reps = plan.bootstrap_reps
    segments = figures(runs["ab"], hard, advertiser, reps)
    main = segments["expected_conversions"]
    coverage = aa_coverage(runs["aa"], hard, advertiser, reps) if runs["aa"] else {}
    out = flatten(main)
    out["aa_coverage"] = coverage.get("median_cpa_change")
    out["aa_coverage_by_figure"] = coverage
    out["aa_seeds"] = len(runs["aa"])
    out["hard_setups"] = int(hard.sum())
    out["setups"] = int(hard.size)
    out["setups_without_conversions"] = {
        basis: {seg: segments[basis][seg]["all"]["setups_without_conversions"] for seg in main}
        for basis in segments
    }
    drawn = flatten(segments["conversions"])
    out["drawn_conversions"] = {k: v for k, v in drawn.items() if k.startswith("hard_")}
    out["offline"] = {
        name: {k: _finite(v) for k, v in figures_.items()}
        for name, figures_ in prepared.offline.items()
    }
    by_arm = [calibration(run, hard) for run in runs["ab"]]
    out["calibration_won"] = {
        arm: {
            seg: _finite(np.mean([c[arm][seg] for c in by_arm if c[arm][seg] is not None]))
            for seg in ("hard", "soft")
        }
        for arm in ("control", "variant")
    }
    out["arms"] = {
        arm.name: {
            key: round(float(np.mean([_totals(run[i], hard)[key] for run in runs["ab"]])), 4)
            for key in _totals(arm, hard)
        }
        for i, arm in enumerate(runs["ab"][0])
    }
    out["comparison"] = plan.comparison
    out["arms_described"] = COMPARISONS[plan.comparison]
    out["seeds"] = list(plan.seeds)
    out["test_days"] = plan.test_days
    return out


def _totals(arm: ArmOutcome, hard: np.ndarray) -> dict[str, float]:
    sums = arm.sums
    impressions = sums["impressions"].sum()
    return {
        "requests": arm.requests,
        "impressions": impressions,
        "spend": sums["spend"].sum(),
        "budget_used": sums["spend"].sum() / arm.budget.sum(),
        "expected_conversions": sums["expected_conversions"].sum(),
        "conversions": sums["conversions"].sum(),
        "hard_impression_share": sums["impressions"][hard].sum() / max(impressions, 1),
    }
