"""Window training fed from Kafka against ``model.fit`` on the same examples in memory.

    python -m bench.trainer [--examples 1000000]

Starts a broker, produces simulated labeled examples and their true task assignments, then
runs the trainer until it has trained and published one window holding all of them (it closes
when the topic is drained). ``window_examples_per_s`` counts from the first poll to the end of
training (reading, parsing, task lookup, training); ``fit_examples_per_s`` is ``fit`` of the same
model configuration on the same examples already in memory. Prints one JSON line last with
both, their ``ratio`` (target >= 0.8) and ``window_publish_s`` (first poll to the published
version, target <= 60 s for 1,000,000 examples).
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
from model.features import FeatureSpec, records_to_inputs
from model.training import fit
from rarecvr.produce import produce
from rarecvr.topics import ensure_topics
from simulator import Marketplace, SimConfig
from simulator.labels import labeled_examples, true_assignments
from simulator.tables import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from trainer.loop import Trainer, TrainerConfig

HOUR_MS = 3_600_000


class TimedTrainer(Trainer):
    """The trainer, remembering when it started reading and when training ended."""

    def run(self, *args, **kwargs):
        self.t_start = time.perf_counter()
        return super().run(*args, **kwargs)

    def train_window(self, examples, end_offsets):
        self.examples = examples
        self.t_window = time.perf_counter()
        entry = super().train_window(examples, end_offsets)
        self.t_published = time.perf_counter()
        return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1_000_000)
    args = parser.parse_args()
    os.environ["RARECVR_TOPIC_PREFIX"] = "bench."
    fetch()
    sim = SimConfig(clicks=args.examples, days=3.0, attribution_window_ms=6 * HOUR_MS)
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
                                state_dir=Path(tmp) / "state", model=model,
                                window_ms=10 * 86_400_000,
                                attribution_window_ms=sim.attribution_window_ms)  # fmt: skip
            trainer = TimedTrainer(cfg)
            trainer.run(max_windows=1)
        finally:
            broker.stop()
    entry = trainer.state.history[-1]
    n = entry["examples"]
    train_n = int(n * (1 - cfg.gate.tail_share))
    fit_s_window = train_n / entry["train_examples_per_s"]
    read_s = trainer.t_window - trainer.t_start
    window_rate = train_n / (read_s + fit_s_window)
    examples = trainer.examples
    records = [e["features"] | {"setup_id": e["setup_id"], "advertiser_id": e["advertiser_id"]}
               for e in examples[:train_n]]  # fmt: skip
    inputs = records_to_inputs(records, model.features)
    labels = np.array([e["label"] for e in examples[:train_n]], np.float32)
    hard = trainer.tasks_of(examples[:train_n])
    started = time.perf_counter()
    fit(model, inputs, labels, hard, batch=cfg.batch)
    fit_rate = train_n / (time.perf_counter() - started)
    print(json.dumps({
        "window_examples_per_s": round(window_rate),
        "fit_examples_per_s": round(fit_rate),
        "ratio": round(window_rate / fit_rate, 3),
        "examples": n,
        "read_parse_s": round(read_s, 1),
        "window_publish_s": round(trainer.t_published - trainer.t_start, 1),
        "published_version": entry["version"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
