"""Window training fed from Kafka against ``model.fit`` on the same examples in memory.

    python -m bench.trainer [--examples 1000000]

Starts a broker, produces simulated labeled examples (three days of clicks, a six-hour
attribution window) and their true task assignments, then runs the trainer until it has trained
and published its first window, three days of label time holding about ``--examples`` examples.
``window_examples_per_s`` counts the examples trained (the window less its held-out tail) over
the time from the first poll to the end of training (reading and parsing in the feed thread,
task lookup and training chunk by
chunk); ``fit_examples_per_s`` is ``fit`` of the same model configuration on the same examples
already in memory. Prints one JSON line last with both, their ``ratio`` (target >= 0.8) and
``window_publish_s`` (first poll to the published version, target <= 60 s for 1,000,000
examples; null when the gate refused the window, as it may: this is the first model, and a
stream's first window is not a fair sample) with ``window_s`` (first poll to the window done:
gated, and published if it passed) and ``publish_step_s`` (exporting and publishing the
candidate, timed on a scratch registry).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from deploy.kafka import Broker, fetch
from model.dcn import ModelConfig
from model.export import export_version
from model.features import FeatureSpec
from model.training import fit
from rarecvr.produce import produce
from rarecvr.topics import ensure_topics
from simulator import Marketplace, SimConfig
from simulator.labels import labeled_examples, true_assignments
from simulator.tables import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from trainer.examples import Examples, parse
from trainer.loop import Trainer, TrainerConfig
from trainer.registry import Registry

HOUR_MS = 3_600_000


class TimedTrainer(Trainer):
    """The trainer, remembering when it started reading, finished training and published."""

    def run(self, *args, **kwargs):
        self.t_start = time.perf_counter()
        return super().run(*args, **kwargs)

    def finish_window(self, run, end_offsets):
        self.t_trained, self.window = time.perf_counter(), run
        entry = super().finish_window(run, end_offsets)
        self.t_published = time.perf_counter()
        return entry


def trained_examples(market: Marketplace, run, window_ms: int, n: int, spec) -> Examples:
    """The window's ``n`` oldest examples by label time, regenerated (the simulator is
    deterministic): the examples the window trained on, up to labels that arrived late."""
    examples, bad = parse([record.value for record in labeled_examples(market)], spec)
    assert not bad, bad[:3]
    t = examples.label_time(run.attribution_window_ms)
    inside = np.flatnonzero((run.start_ms <= t) & (t < run.start_ms + window_ms))
    return examples.take(inside[np.argsort(t[inside], kind="stable")][:n])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1_000_000)
    args = parser.parse_args()
    os.environ["RARECVR_TOPIC_PREFIX"] = "bench."
    fetch()
    window_ms = 3 * 86_400_000  # the simulator starts on a multiple of three days
    # A six-hour attribution window: about 92% of three days' clicks have their label inside the
    # first window, and the stream's first hours (positives only: no attribution window has
    # closed yet) are a small part of it.
    sim = SimConfig(clicks=int(args.examples / 0.9), days=3.0, attribution_window_ms=6 * HOUR_MS)
    model = ModelConfig(FeatureSpec(CATEGORICAL_FEATURES, NUMERIC_FEATURES))
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "kafka", log_level="WARN", heap="1g")
        info = broker.start()
        try:
            ensure_topics(info.bootstrap)
            market = Marketplace(sim)
            produce(info.bootstrap, true_assignments(market))
            produce(info.bootstrap, labeled_examples(market))
            cfg = TrainerConfig(bootstrap=info.bootstrap, registry=Path(tmp) / "registry",
                                state_dir=Path(tmp) / "state", model=model, window_ms=window_ms,
                                attribution_window_ms=sim.attribution_window_ms)  # fmt: skip
            trainer = TimedTrainer(cfg)
            trainer.run(max_windows=1)
        finally:
            broker.stop()
    entry = trainer.state.history[-1]
    trained = entry["trained_examples"]
    window_rate = trained / (trainer.t_trained - trainer.t_start)
    examples = trained_examples(market, trainer.window, window_ms, trained, model.features)
    labels = examples.meta["label"].astype(np.float32)
    hard = trainer.tasks_of(examples)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        Registry(Path(tmp)).publish(lambda d: export_version(trainer.window.candidate, d), {})
        publish_step_s = time.perf_counter() - started
    started = time.perf_counter()
    fit(model, examples.inputs, labels, hard, batch=cfg.batch)
    fit_rate = len(examples) / (time.perf_counter() - started)
    print(json.dumps({
        "window_examples_per_s": round(window_rate),
        "fit_examples_per_s": round(fit_rate),
        "ratio": round(window_rate / fit_rate, 3),
        "examples": entry["examples"],
        "trained_examples": trained,
        "refit_examples": len(examples),
        "window_train_examples_per_s": entry["train_examples_per_s"],
        "window_publish_s": round(trainer.t_published - trainer.t_start, 1)
        if entry["version"] else None,
        "window_s": round(trainer.t_published - trainer.t_start, 1),
        "publish_step_s": round(publish_step_s, 1),
        "published_version": entry["version"],
        "rejected": entry["rejected"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
