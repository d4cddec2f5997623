"""``rarecvr research``: the offline study a user runs before trusting the model online.

It reproduces the paper's Tables 1 to 3 on simulator data (or a user's log): the loss-weight
sweep against the hard-only model, the number of shared layers, and the best multi-task model
against the single-task model on all conversions, over several seeds, on the hard population.
On simulator data it adds the sweep over the shared-signal strength (at 0, multi-task learning
should not help) and the oracle's ceiling.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from model import metrics
from model.dcn import SINGLE_TASK, ModelConfig
from model.training import fit, head_for, predict
from research.data import Study

#: (W_hard, W_soft) pairs of the paper's Table 1, and its RIG lifts over hard-only, in %.
PAPER_WEIGHT_LIFT = {
    (0.2, 0.8): 0.86,
    (0.5, 0.5): 1.17,
    (0.6, 0.4): 1.16,
    (0.7, 0.3): 1.04,
    (0.8, 0.2): 0.80,
    (0.9, 0.1): 0.55,
}
#: Shared layers beyond the embeddings (Table 2), RIG lift in %.
PAPER_LAYER_LIFT = {1: 0.03, 2: 0.11, 3: 0.19, 4: 0.21}
#: Best MTL vs the single-task model on the hard population (Table 3), in %.
PAPER_VS_SINGLE = {"rig": 4.08, "auc": 0.69}


@dataclass(frozen=True)
class Plan:
    """What to train and how. ``quick`` is the small version that runs in minutes."""

    seeds: tuple[int, ...] = (1, 2, 3)
    weights: tuple[tuple[float, float], ...] = tuple(PAPER_WEIGHT_LIFT)
    layers: tuple[int, ...] = (0, 1, 2, 3, 4)
    base_layers: int = 2
    strengths: tuple[float, ...] = (0.0, 0.5, 1.0)
    main_strength: float = 1.0
    hash_buckets: int = 100_000
    epochs: int = 1
    batch: int = 1024
    bootstrap_reps: int = 200
    #: With several epochs, this share of the training split (its end) picks the epoch.
    validation_share: float = 0.1

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            seeds=(1,),
            weights=((0.5, 0.5), (0.7, 0.3), (0.9, 0.1)),
            layers=(0, 2),
            strengths=(0.0, 1.0),
            hash_buckets=20_000,
            bootstrap_reps=100,
        )


@dataclass
class Run:
    """One trained configuration on one data set: its figures and its hard-population scores."""

    name: str
    group: str
    seed: int
    strength: float | None
    config: dict
    figures: dict
    hard_scores: np.ndarray
    soft_scores: np.ndarray


@dataclass
class Findings:
    """Everything the report and the JSON line are made from."""

    runs: list[Run] = field(default_factory=list)
    labels: dict = field(default_factory=dict)  # (strength, population) -> pooled labels
    truth: dict = field(default_factory=dict)  # (strength, population) -> pooled true_p
    about: dict = field(default_factory=dict)


def model_configs(plan: Plan, spec) -> dict[str, tuple[str, ModelConfig]]:
    """Name -> (group, config) of the main comparison."""
    base = ModelConfig(spec, hash_buckets=plan.hash_buckets, shared_layers=plan.base_layers)
    configs = {
        "single-task": ("baseline", replace(base, tasks=SINGLE_TASK, loss_weights=(1.0,))),
        "hard-only": ("baseline", replace(base, loss_weights=(0.0, 1.0))),
        LOGISTIC: ("baseline", logistic_regression(base)),
    }
    for w_hard, w_soft in plan.weights:
        configs[weights_name(w_hard, w_soft)] = (
            "weights",
            replace(base, loss_weights=(w_soft, w_hard)),
        )
    return configs


LOGISTIC = "logistic regression"
#: Chosen by a sweep on 1,000,000 simulated clicks (docs/research.md, "The logistic regression").
LOGISTIC_L2, LOGISTIC_LEARNING_RATE = 1e-4, 1e-2


def logistic_regression(
    config: ModelConfig, l2: float = LOGISTIC_L2, learning_rate: float = LOGISTIC_LEARNING_RATE
) -> ModelConfig:
    """Hashed logistic regression with L2 on the same features (the response-prediction
    baseline of Chapelle et al. 2015): a weight per hashed value, a linear term of the numeric
    features, one output on all examples; like every model here it stops at the pass the
    validation split picks."""
    return replace(
        config,
        embedding_dim=1,
        shared_layers=0,
        tower_units=(),
        tasks=SINGLE_TASK,
        loss_weights=(1.0,),
        linear=True,
        l2=l2,
        learning_rate=learning_rate,
    )


def weights_name(w_hard: float, w_soft: float) -> str:
    return f"MTL W_hard={w_hard:g} W_soft={w_soft:g}"


def score(config: ModelConfig, model, study: Study) -> tuple[dict, np.ndarray, np.ndarray]:
    out = predict(model, study.test.inputs)
    test = study.test
    hard = out[head_for(config, "hard")][test.hard]
    soft = out[head_for(config, "soft")][~test.hard]
    figures = {}
    for population, mask, p in (("hard", test.hard, hard), ("soft", ~test.hard, soft)):
        y = test.labels[mask]
        if y.size and 0 < y.sum() < y.size:
            figures |= {
                f"rig_{population}": metrics.rig(y, p),
                f"auc_{population}": metrics.auc(y, p),
                f"calibration_{population}": metrics.calibration_ratio(y, p),
                f"ece_{population}": metrics.ece(y, p),
            }
    return figures, hard, soft


def run_study(
    plan: Plan,
    studies: Callable[[int, float | None], Study],
    strengths: tuple[float | None, ...],
    progress: Callable[[str], None] = print,
) -> Findings:
    """Train and score every configuration of the plan on every seed (and signal strength)."""
    findings = Findings()
    main = plan.main_strength if plan.main_strength in strengths else strengths[-1]
    ordered = [main, *[s for s in strengths if s != main]]  # the sweep needs the best weights
    for seed in plan.seeds:
        for strength in ordered:
            study = studies(seed, strength)
            findings.about = study.about
            for key, part in (("hard", study.test.hard), ("soft", ~study.test.hard)):
                findings.labels.setdefault((strength, key), []).append(study.test.labels[part])
                if study.test.true_p is not None:
                    findings.truth.setdefault((strength, key), []).append(study.test.true_p[part])
            configs = model_configs(plan, study.spec)
            if strength != main:  # the strength sweep compares the best-known MTL only
                keep = (
                    "single-task",
                    "hard-only",
                    LOGISTIC,
                    weights_name(*best_weights(findings, plan, main)),
                )
                configs = {k: v for k, v in configs.items() if k in keep}
            todo = list(configs.items())
            if strength == main:
                name = weights_name(*best_weights(findings, plan, main))
                _, cfg = configs[name]
                todo += [
                    (f"MTL {n} shared layers", ("layers", replace(cfg, shared_layers=n)))
                    for n in plan.layers
                    if n != plan.base_layers
                ]
            for name, (group, cfg) in todo:
                started = time.monotonic()
                cfg = replace(cfg, seed=seed)
                model = fit(
                    cfg,
                    *fit_split(study, plan),
                    epochs=plan.epochs,
                    batch=plan.batch,
                    validation=validation_split(study, plan),
                )
                figures, hard, soft = score(cfg, model, study)
                figures["train_s"] = time.monotonic() - started
                findings.runs.append(
                    Run(name, group, seed, strength, cfg.to_dict(), figures, hard, soft)
                )
                progress(
                    f"seed {seed} strength {strength} {name}: hard RIG "
                    f"{figures.get('rig_hard', float('nan')):.4f} "
                    f"({figures['train_s']:.0f} s)"
                )
    findings.about = findings.about | {"main_strength": main}
    return findings


def _tail(study: Study, plan: Plan) -> int:
    """Rows at the end of the training split held out to pick the epoch (0: none)."""
    return int(len(study.train) * plan.validation_share) if plan.epochs > 1 else 0


def fit_split(study: Study, plan: Plan | None = None):
    train = study.train
    cut = len(train) - _tail(study, plan) if plan else len(train)
    return {k: v[:cut] for k, v in train.inputs.items()}, train.labels[:cut], train.hard[:cut]


def validation_split(study: Study, plan: Plan):
    n = _tail(study, plan)
    if n == 0:
        return None
    train = study.train
    return {k: v[-n:] for k, v in train.inputs.items()}, train.labels[-n:], train.hard[-n:]


def pooled(findings: Findings, name: str, strength, population: str = "hard"):
    runs = [r for r in findings.runs if r.name == name and r.strength == strength]
    runs.sort(key=lambda r: r.seed)
    if not runs:
        return None
    scores = np.concatenate(
        [r.hard_scores if population == "hard" else r.soft_scores for r in runs]
    )
    return scores


def pooled_labels(findings: Findings, strength, population: str = "hard"):
    return np.concatenate(findings.labels[(strength, population)])


def best_weights(findings: Findings, plan: Plan, strength) -> tuple[float, float]:
    """The weight pair with the best mean hard RIG so far at ``strength`` ((0.5, 0.5) if none)."""
    means = {}
    for w in plan.weights:
        values = [
            r.figures["rig_hard"]
            for r in findings.runs
            if r.name == weights_name(*w) and r.strength == strength and "rig_hard" in r.figures
        ]
        if values:
            means[w] = float(np.mean(values))
    if not means:
        return (0.5, 0.5) if (0.5, 0.5) in plan.weights else plan.weights[0]
    return max(means, key=means.get)


#: The value of each metric that a constant predictor scores: a baseline at or below it is
#: worse than a constant, and a lift relative to it means nothing.
CONSTANT = {metrics.rig: 0.0, metrics.auc: 0.5}


def lift(findings: Findings, a: str, b: str, strength, metric, reps: int) -> dict | None:
    """a against b on the pooled hard population: difference and relative lift, with paired
    bootstrap intervals, and whether b is worse than a constant."""
    pa_, pb = pooled(findings, a, strength), pooled(findings, b, strength)
    if pa_ is None or pb is None:
        return None
    y = pooled_labels(findings, strength)
    if not 0 < y.sum() < y.size:
        return None
    out = metrics.paired_bootstrap_comparison(metric, y, pa_, pb, reps=reps)
    return out | {"baseline_worse_than_constant": out["baseline"] <= CONSTANT[metric]}


def summarise(findings: Findings, plan: Plan) -> dict:
    """The headline figures: lifts with CIs, the oracle's share, and the best configuration."""
    main = findings.about["main_strength"]
    reps = plan.bootstrap_reps
    y = pooled_labels(findings, main)
    names = sorted({r.name for r in findings.runs if r.strength == main})
    rig_of = {n: metrics.rig(y, pooled(findings, n, main)) for n in names} if y.sum() > 0 else {}
    mtl = [n for n in rig_of if n.startswith("MTL")]
    best = max(mtl, key=rig_of.get) if mtl else None
    best_w = weights_name(*best_weights(findings, plan, main))
    layers = {plan.base_layers: rig_of.get(best_w)}
    layers |= {
        n: rig_of.get(f"MTL {n} shared layers") for n in plan.layers if n != plan.base_layers
    }
    summary = {
        "rig_hard": rig_of,
        "best_mtl": best,
        "best_weights": best_w,
        "vs_single_task": {
            "rig": lift(findings, best, "single-task", main, metrics.rig, reps),
            "auc": lift(findings, best, "single-task", main, metrics.auc, reps),
        }
        if best
        else {},
        "weights_vs_hard_only": {
            n: lift(findings, n, "hard-only", main, metrics.rig, reps)
            for n in names
            if n.startswith("MTL W_")
        },
        "layers_rig_hard": dict(sorted(layers.items())),
        "strengths": {
            strength: {
                f"vs_{base}": lift(findings, best_w, base, strength, metrics.rig, reps)
                for base in ("single-task", "hard-only")
            }
            for strength in sorted({r.strength for r in findings.runs if r.strength is not None})
        },
    }
    if (main, "hard") in findings.truth and best:
        oracle = metrics.rig(y, np.concatenate(findings.truth[(main, "hard")]))
        summary["oracle_rig_hard"] = oracle
        summary["oracle_rig_fraction"] = rig_of[best] / oracle
    rig_vs = summary["vs_single_task"].get("rig") or {}
    summary["json"] = {
        "rig_lift_vs_single_task": _value(rig_vs, "lift"),
        "rig_diff_vs_single_task": _value(rig_vs, "diff"),
        "rig_diff_ci": [_value(rig_vs, "diff_ci_low"), _value(rig_vs, "diff_ci_high")],
        "baseline_worse_than_constant": rig_vs.get("baseline_worse_than_constant"),
        "auc_lift_vs_single_task": _value(summary["vs_single_task"].get("auc") or {}, "lift"),
        "oracle_rig_fraction": summary.get("oracle_rig_fraction"),
        "best_mtl_hard_rig": rig_of.get(best),
        "single_task_hard_rig": rig_of.get("single-task"),
        "hard_only_hard_rig": rig_of.get("hard-only"),
        "logistic_regression_hard_rig": rig_of.get(LOGISTIC),
    }
    return summary


def _value(entry: dict, key: str):
    value = entry.get(key)
    return None if value is None or math.isnan(value) else value
