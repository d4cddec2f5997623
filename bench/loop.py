"""The loop's served model against an offline fit, a single-task loop and the oracle.

    python -m bench.loop [--clicks 2000000] [--days 14] [--history-days 4] [--window-hours 12]

Starts a broker, writes the first ``--history-days`` of a simulated marketplace as a click log
and produces the labeled examples of the rest (each sent when its click's attribution window
closes, as the stream worker sends them) with the simulator's true task assignments: the stream
worker and the stabilizer are not in this loop yet, so it measures the trainer and the model.
Then, in one run on the same broker and data:

- ``rarecvr train``'s loop with the multi-task model: version 1 fitted on the history, then
  every window, each scored by the version serving before it trains (progressive validation);
- the same loop with the single-task model (one tower on all examples);
- an offline ``fit`` of the multi-task architecture on the history and the clicks whose label
  time falls before the last quarter of windows, scored on the clicks of the last quarter.

Prints one JSON line last: ``served_hard_rig`` (the served versions' progressive hard RIG,
pooled over the last quarter of windows), ``offline_hard_rig`` and ``oracle_hard_rig`` (the
true probabilities) on the clicks of the same windows, ``ratio_to_offline``,
``hard_calibration`` (expected over observed hard conversions of every served prediction),
``mtl_vs_single_task_rig_diff`` and ``mtl_vs_single_task_rig_lift`` (over the single-task
loop's served RIG, divided by its absolute value), ``min_published_hard_rig`` (the lowest
holdout hard RIG of any published version) and ``logistic_regression_hard_rig`` (hashed
logistic regression, ``research.study.logistic_regression``, fitted offline like the MTL fit).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from deploy.kafka import Broker, fetch
from model import metrics
from model.dcn import SINGLE_TASK, ModelConfig
from model.training import auto_epochs, fit, predict
from rarecvr.logfile import HistoryLog
from rarecvr.produce import produce
from rarecvr.schema import FeatureSchema, encode_table
from rarecvr.topics import ensure_topics
from rarecvr.units import DAY_MS, HOUR_MS
from research.study import logistic_regression
from simulator import Marketplace, SimConfig
from simulator.labels import labeled_examples, true_assignments
from simulator.tables import CATEGORICAL_FEATURES, NUMERIC_FEATURES, Vocab, clicks_table
from simulator.traffic import generate
from trainer.loop import Trainer, TrainerConfig


class RecordingTrainer(Trainer):
    """A trainer that keeps, per window, the served hard predictions with their labels."""

    def __init__(self, cfg: TrainerConfig):
        super().__init__(cfg)
        self.served: list[tuple[int, np.ndarray, np.ndarray]] = []  #: (start ms, labels, p)

    def finish_window(self, run, end_offsets):
        if run.serving is not None and run.seen:
            labels, probs = run.served_hard()
            self.served.append((run.start_ms, labels, probs))
        return super().finish_window(run, end_offsets)


def run_loop(cfg: TrainerConfig, history: HistoryLog) -> RecordingTrainer:
    trainer = RecordingTrainer(cfg)
    trainer.bootstrap(history)
    trainer.run(idle_stop_s=20)
    return trainer


def pooled(served, from_ms: int) -> tuple[np.ndarray, np.ndarray]:
    rows = [(y, p) for start, y, p in served if start >= from_ms]
    return np.concatenate([y for y, _ in rows]), np.concatenate([p for _, p in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=2_000_000)
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--history-days", type=float, default=4.0)
    parser.add_argument("--window-hours", type=float, default=12.0)
    parser.add_argument("--attribution-hours", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    os.environ["RARECVR_TOPIC_PREFIX"] = "bench."
    fetch()
    attribution_ms, window_ms = (
        int(args.attribution_hours * HOUR_MS),
        int(args.window_hours * HOUR_MS),
    )
    sim = SimConfig(
        clicks=args.clicks, days=args.days, seed=args.seed, attribution_window_ms=attribution_ms
    )
    market = Marketplace(sim)
    live_from = sim.start_ms + int(args.history_days * DAY_MS)
    table = pa.concat_tables(clicks_table(c, Vocab(market)) for c in generate(market))
    label_ms = table["ts_ms"].to_numpy() + attribution_ms
    first_window = (live_from + attribution_ms) // window_ms * window_ms
    windows = int(np.ceil((label_ms.max() + 1 - first_window) / window_ms))
    quarter_ms = first_window + (windows - windows // 4) * window_ms  # the last quarter's start
    model = ModelConfig(FeatureSchema(CATEGORICAL_FEATURES, NUMERIC_FEATURES))
    truth = market.is_hard(np.arange(market.n_setups), sim.start_ms)
    hard_setups = dict(zip(market.setup_ids, truth, strict=True))
    hard = np.array([hard_setups[s] for s in table["setup_id"].to_pylist()])
    labels = table["converted"].to_numpy().astype(np.float32)
    true_p = table["true_p"].to_numpy()
    train_rows = label_ms < quarter_ms
    test_rows = (label_ms >= quarter_ms) & (table["ts_ms"].to_numpy() >= live_from)
    with tempfile.TemporaryDirectory() as tmp:
        history = Path(tmp) / "history.parquet"
        pq.write_table(table.filter(pc.less(table["ts_ms"], live_from)), history)
        inputs = encode_table(table, model.features)
        del table
        broker = Broker(Path(tmp) / "kafka", log_level="WARN", heap="1g")
        info = broker.start()
        try:
            ensure_topics(info.bootstrap)
            produce(info.bootstrap, true_assignments(market))
            first_label = live_from + attribution_ms
            produce(info.bootstrap, (r for r in labeled_examples(market) if r.ts_ms >= first_label))
            loops = {}
            for name, config in (
                ("mtl", model),
                ("single", replace(model, tasks=SINGLE_TASK, loss_weights=(1.0,))),
            ):
                cfg = TrainerConfig(
                    info.bootstrap,
                    Path(tmp) / f"registry-{name}",
                    Path(tmp) / f"state-{name}",
                    config,
                    window_ms,
                    attribution_ms,
                    group=f"bench.loop.{name}",
                    close_idle_s=5,
                )
                loops[name] = run_loop(cfg, HistoryLog(history))
        finally:
            broker.stop()
    train_idx, test_idx = np.flatnonzero(train_rows), np.flatnonzero(test_rows & hard)
    cut = int(train_idx.size * 0.9)
    part = lambda rows: ({k: v[rows] for k, v in inputs.items()}, labels[rows], hard[rows])  # noqa: E731
    offline = fit(
        model,
        *part(train_idx[:cut]),
        epochs=auto_epochs(cut),
        batch=1024,
        validation=part(train_idx[cut:]),
    )
    logistic = fit(
        logistic_regression(model),
        *part(train_idx[:cut]),
        epochs=auto_epochs(cut),
        batch=1024,
        validation=part(train_idx[cut:]),
    )
    y_test = labels[test_idx]
    offline_rig = metrics.rig(y_test, predict(offline, part(test_idx)[0])["hard"])
    logistic_rig = metrics.rig(y_test, predict(logistic, part(test_idx)[0])["all"])
    oracle_rig = metrics.rig(y_test, true_p[test_idx])
    y, p = pooled(loops["mtl"].served, quarter_ms)
    served_rig = metrics.rig(y, p)
    single_rig = metrics.rig(*pooled(loops["single"].served, quarter_ms))
    all_y, all_p = pooled(loops["mtl"].served, 0)
    published = [
        e["holdout"]["candidate"]["hard_rig"]
        for e in [loops["mtl"].state.bootstrap, *loops["mtl"].state.history]
        if e and e.get("version") and e["holdout"]["candidate"]
    ]
    published = [r for r in published if r is not None]
    print(
        json.dumps(
            {
                "served_hard_rig": round(served_rig, 4),
                "offline_hard_rig": round(offline_rig, 4),
                "oracle_hard_rig": round(oracle_rig, 4),
                "ratio_to_offline": round(served_rig / offline_rig, 3) if offline_rig > 0 else None,
                "hard_calibration": round(float(all_p.sum() / all_y.sum()), 3),
                "single_task_served_hard_rig": round(single_rig, 4),
                "mtl_vs_single_task_rig_diff": round(served_rig - single_rig, 4),
                "mtl_vs_single_task_rig_lift": round(
                    metrics.relative_lift(served_rig, single_rig), 4
                ),
                "min_published_hard_rig": round(min(published), 4) if published else None,
                "logistic_regression_hard_rig": round(logistic_rig, 4),
                "windows": len(loops["mtl"].state.history),
                "versions_published": len(published),
                "served_hard_examples": int(y.size),
                "served_hard_positives": int(y.sum()),
                "offline_hard_examples": int(y_test.size),
                "offline_hard_positives": int(y_test.sum()),
                "configuration": vars(args),
            }
        )
    )


if __name__ == "__main__":
    main()
