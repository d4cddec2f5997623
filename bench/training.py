"""Training throughput of the multi-task model against the single-task model, side by side.

    python -m bench.training [--examples 1000000] [--rounds 2]

Reference configuration (issue 4): the simulator's features, 100,000 hash buckets per
categorical feature, embedding size 16, two shared cross layers, towers 256 and 128, batch
4096, input fed by tf.data from Parquet. Rounds alternate single-task and MTL so both see the
same machine load. Prints one JSON line last: ``mtl_examples_per_s``,
``single_task_examples_per_s`` and their ``ratio`` (targets: ratio >= 0.95, MTL >= 50,000).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from model.dcn import SINGLE_TASK, ModelConfig, build  # noqa: E402
from model.parquet_input import parquet_dataset  # noqa: E402
from rarecvr.schema import FeatureSchema, encode_table  # noqa: E402
from simulator import Marketplace, SimConfig  # noqa: E402
from simulator.tables import CATEGORICAL_FEATURES, NUMERIC_FEATURES, write_parquet  # noqa: E402

SPEC = FeatureSchema(CATEGORICAL_FEATURES, NUMERIC_FEATURES)
REFERENCE = ModelConfig(
    SPEC, hash_buckets=100_000, embedding_dim=16, shared_layers=2, tower_units=(256, 128)
)
BATCH = 4096


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        market = Marketplace(replace(SimConfig(), clicks=args.examples))
        paths = write_parquet(market, Path(tmp))
        hard_setups = pa.array(
            [s for s, c in zip(market.setup_ids, market.base_cvr, strict=True) if c <= 0.01]
        )

        def task_of(batch):
            """Hard when the setup is hard: looked up once per dictionary value, not per row."""
            column = batch.column("setup_id")
            hard = pc.is_in(column.dictionary, value_set=hard_setups).to_numpy(zero_copy_only=False)
            return hard[column.indices.to_numpy()]

        sample = encode_table(pq.read_table(paths["clicks"]).slice(0, 10_000), SPEC)
        models = {
            "single_task": build(
                replace(REFERENCE, tasks=SINGLE_TASK, loss_weights=(1.0,)), sample
            ),
            "mtl": build(REFERENCE, sample),
        }
        # Warm up: trace the train step of each once.
        for model in models.values():
            model.fit(
                parquet_dataset(
                    paths["clicks"], SPEC, BATCH, "converted", task_of, limit=3 * BATCH
                ),
                verbose=0,
            )
        seconds = {name: 0.0 for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                single = name == "single_task"

                def tasks(batch, single=single):
                    return np.zeros(batch.num_rows, np.int32) if single else task_of(batch)

                data = parquet_dataset(paths["clicks"], SPEC, BATCH, "converted", tasks)
                started = time.perf_counter()
                model.fit(data, verbose=0)
                seconds[name] += time.perf_counter() - started
    examples = args.examples * args.rounds
    mtl, single = examples / seconds["mtl"], examples / seconds["single_task"]
    print(
        json.dumps(
            {
                "mtl_examples_per_s": round(mtl),
                "single_task_examples_per_s": round(single),
                "ratio": round(mtl / single, 3),
                "examples_per_round": args.examples,
                "rounds": args.rounds,
                "batch": BATCH,
                "hash_buckets": REFERENCE.hash_buckets,
            }
        )
    )


if __name__ == "__main__":
    main()
