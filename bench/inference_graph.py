"""Serving cost of the hard-only graph against the single-task and the full multi-task graphs.

    python -m bench.inference_graph [--iterations 300]

The SavedModels are exported from models of the reference configuration and timed in one
process, interleaved call by call, at batches of 100 and 1,000 candidates. Prints one JSON line
last: ``hard_only_vs_single_task_latency`` and ``hard_only_vs_full_mtl_latency`` (p50 latency
ratios by batch size; targets <= 1.05 and < 1), ``esmm_hard_only_vs_single_task_latency`` (the
hard-only graph of a model with a CTR tower for entire-space training; target <= 1.05) and
``max_abs_diff`` (hard-only graph against the full model's hard head; target <= 1e-6).
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
import tensorflow as tf  # noqa: E402

from bench.training import REFERENCE, SPEC  # noqa: E402
from model.dcn import SINGLE_TASK, build  # noqa: E402
from model.export import SIGNATURE, export  # noqa: E402
from rarecvr.schema import encode_table  # noqa: E402
from simulator import Marketplace, SimConfig  # noqa: E402
from simulator.tables import Vocab, clicks_table  # noqa: E402
from simulator.traffic import generate  # noqa: E402


def interleaved_p50_ms(serve: dict, batch: dict, iterations: int) -> dict[str, float]:
    """Median latency of each signature on ``batch``, called in turn so noise hits all alike."""
    timings = {n: [] for n in serve}
    for fn in serve.values():  # warm up
        fn(**batch)
    for _ in range(iterations):
        for n, fn in serve.items():
            started = time.perf_counter()
            fn(**batch)
            timings[n].append(time.perf_counter() - started)
    return {n: float(np.median(t)) * 1000 for n, t in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    market = Marketplace(replace(SimConfig(), clicks=20_000))
    table = pa.concat_tables(clicks_table(c, Vocab(market)) for c in generate(market))
    inputs = encode_table(table, SPEC)
    mtl = build(REFERENCE, inputs)
    esmm = build(replace(REFERENCE, ctr_weight=1.0, ctcvr_weight=1.0), inputs)
    single = build(replace(REFERENCE, tasks=SINGLE_TASK, loss_weights=(1.0,)), inputs)
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {
            "hard_only": export(mtl, "hard", Path(tmp) / "hard" / "1"),
            "single_task": export(single, "all", Path(tmp) / "single" / "1"),
            "full_mtl": export(mtl, ("soft", "hard"), Path(tmp) / "full" / "1"),
            "esmm_hard_only": export(esmm, "hard", Path(tmp) / "esmm" / "1"),
        }
        serve = {n: tf.saved_model.load(str(p)).signatures[SIGNATURE] for n, p in graphs.items()}
        result = {
            "hard_only_vs_single_task_latency": {},
            "hard_only_vs_full_mtl_latency": {},
            "esmm_hard_only_vs_single_task_latency": {},
        }
        p50 = {}
        for size in (100, 1000):
            batch = {k: tf.constant(v[:size]) for k, v in inputs.items()}
            p50[size] = interleaved_p50_ms(serve, batch, args.iterations)
            result["hard_only_vs_single_task_latency"][str(size)] = round(
                p50[size]["hard_only"] / p50[size]["single_task"], 3
            )
            result["hard_only_vs_full_mtl_latency"][str(size)] = round(
                p50[size]["hard_only"] / p50[size]["full_mtl"], 3
            )
            result["esmm_hard_only_vs_single_task_latency"][str(size)] = round(
                p50[size]["esmm_hard_only"] / p50[size]["single_task"], 3
            )
        batch = {k: tf.constant(v[:1000]) for k, v in inputs.items()}
        hard = serve["hard_only"](**batch)["pcvr"].numpy()
        reference = mtl({k: v[:1000] for k, v in inputs.items()})["hard"].numpy()
        result["max_abs_diff"] = float(np.abs(hard - reference).max())
        result["p50_ms"] = {str(s): {n: round(v, 3) for n, v in d.items()} for s, d in p50.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
