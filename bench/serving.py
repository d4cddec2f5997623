"""A scoring replica under load from a second process, steady and while versions swap.

    python -m bench.serving [--swaps 1000] [--seconds 10]

Starts a broker and a ``rarecvr serve`` process over a registry holding the reference model
configuration (simulator features, 100,000 hash buckets). From this process it measures, one
request in flight at a time: ``p50_ms``/``p99_ms`` for batches of 1, 10 and 100 candidates and
``candidates_per_s`` (batches of 100); then, while a thread keeps requesting batches of 100, it
publishes ``--swaps`` versions (alternating between two exported graphs, each a new version; the
files are hard links, so publishing costs the registry's checksums, not a copy; the publishing
thread runs at idle priority, as a trainer beside replicas should) and reports ``swap_p99_ms``
(publish event to the first response from the new version), ``p99_during_swaps_ms`` (over the
first 100 swaps, as the issue asks), ``failed_requests`` and the replica's relative RSS growth
over the swaps (``rss_growth_1000_swaps`` when 1,000 ran). The first 100 swaps run in 10 rounds
of 10, each after ``--quiet-s`` of the same load without swaps: ``p99_during_swaps_vs_steady``
compares the swap rounds with those quiet spells (``p99_quiet_between_swaps_ms``), measured
side by side, so that the machine's drift does not enter the ratio.
Last, in this process, ``hard_only_vs_full_mtl_latency``: p50 of the hard-only graph over the
full multi-task graph at 100 candidates. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import tensorflow as tf
from kafka import KafkaProducer
from rich.progress import track

from bench.inference_graph import interleaved_p50_ms
from bench.streams import rss_mb
from deploy.kafka import Broker, fetch
from deploy.kafka.broker import free_port
from deploy.serving.graphs import Slot, probe
from model.dcn import ModelConfig, build
from model.export import SIGNATURE, export, export_version
from rarecvr import kafka_auth
from rarecvr.contracts import encode
from rarecvr.registry import Registry
from rarecvr.schema import FeatureSchema
from rarecvr.scrape import samples
from rarecvr.topics import MODEL_UPDATES, ensure_topics
from simulator.tables import CATEGORICAL_FEATURES, NUMERIC_FEATURES

SPEC = FeatureSchema(CATEGORICAL_FEATURES, NUMERIC_FEATURES)


def candidates(n: int, rng: np.random.Generator) -> list[dict]:
    return [
        {
            "setup_id": f"set{int(rng.integers(0, 900)):05d}",
            "advertiser_id": "adv0001",
            "features": {
                name: f"v{int(rng.integers(0, 50))}"
                for name in CATEGORICAL_FEATURES
                if name not in ("setup_id", "advertiser_id")
            }
            | {"recency_days": float(rng.random() * 30)},
        }
        for _ in range(n)
    ]


def post(port: int, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/score", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except Exception as error:  # noqa: BLE001 - every failure counts
        return 599, {"error": str(error)}


def timed(port: int, body: bytes, seconds: float) -> list[float]:
    latencies, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        post(port, body)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def swap_loads(port: int) -> dict[str, int]:
    """The replica's swaps by kind of load, from its metrics."""
    found = samples(f"http://127.0.0.1:{port}/metrics")
    swaps = [s for s in found if s.name == "rarecvr_serving_swaps_total"]
    return {s.labels["load"]: int(s.value) for s in swaps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--quiet-s",
        type=float,
        default=3.0,
        help="load without swaps before each round of 10 swaps",
    )
    args = parser.parse_args()
    os.environ["RARECVR_TOPIC_PREFIX"] = "bench."
    sys.setswitchinterval(0.0002)  # the client thread must not wait on this process's GIL
    fetch()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "kafka", log_level="WARN", heap="512m")
        info = broker.start()
        replica = None
        try:
            ensure_topics(info.bootstrap)
            sample = {n: np.array([b"a", b"b"]) for n in SPEC.categorical}
            sample |= {n: np.array([1.0, 2.0], np.float32) for n in SPEC.numeric}
            builds = []
            for seed in (1, 2):
                model = build(ModelConfig(SPEC, seed=seed), sample, {"hard": 0.005, "soft": 0.1})
                built = Path(tmp) / f"build{seed}"
                export_version(model, built)
                builds.append(built)
            full_mtl = export(model, ("soft", "hard"), Path(tmp) / "full_mtl")
            registry = Registry(Path(tmp) / "registry", keep=3)

            def publish(i: int) -> int:
                return registry.publish(
                    lambda d: shutil.copytree(
                        builds[i % 2], d, dirs_exist_ok=True, copy_function=os.link
                    ),
                    {},
                )

            publish(0)
            port = free_port()
            replica = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rarecvr.cli",
                    "serve",
                    "--bootstrap",
                    info.bootstrap,
                    "--registry",
                    str(registry.root),
                    "--port",
                    str(port),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=os.environ.copy(),
            )
            while post(port, json.dumps({"candidates": candidates(1, rng)}).encode())[0] != 200:
                time.sleep(0.5)
            result: dict = {}
            for size in (1, 10, 100):
                body = json.dumps({"candidates": candidates(size, rng)}).encode()
                timed(port, body, 1.0)  # warm up
                lat = timed(port, body, args.seconds)
                result[f"p50_ms_{size}"] = round(float(np.percentile(lat, 50)), 2)
                result[f"p99_ms_{size}"] = round(float(np.percentile(lat, 99)), 2)
                if size == 100:
                    result["candidates_per_s"] = round(100 * len(lat) / args.seconds)
            body = json.dumps({"candidates": candidates(100, rng)}).encode()
            producer = KafkaProducer(**kafka_auth.kafka_python(info.bootstrap))
            versions: list[tuple[float, int]] = []
            latencies: dict[str, list[float]] = {"quiet": [], "swaps": []}
            phase, failures, stop = ["quiet"], [0], threading.Event()

            def load():
                while not stop.is_set():
                    started, during = time.perf_counter(), phase[0]
                    status, answer = post(port, body)
                    done = time.perf_counter()
                    if during in latencies:
                        latencies[during].append((done - started) * 1000)
                    if status != 200:
                        failures[0] += 1
                    else:
                        versions.append((done, answer["model_version"]))

            def swap(i: int) -> float | None:
                """Publish a version; ms from its event to its first answer (None: not seen)."""
                version = publish(i)
                sent = time.perf_counter()
                update = registry.update_event("publish", version)
                producer.send(MODEL_UPDATES.name, key=b"model", value=encode(update))
                producer.flush()
                while time.perf_counter() < sent + 10:
                    seen = [t for t, v in versions[-50:] if v == version]
                    if seen:
                        return (seen[0] - sent) * 1000
                    time.sleep(0.005)
                return None

            rss_before = rss_mb(replica.pid)
            thread = threading.Thread(target=load)
            thread.start()
            # This thread plays the trainer, which runs elsewhere or beside at a lower priority:
            # its checksums must not take the load generator's CPU.
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
            swap_ms = []
            for i in track(range(1, args.swaps + 1), description="swaps"):
                if i <= 100 and i % 10 == 1:  # a quiet spell before each of the first 10 rounds
                    phase[0] = "quiet"
                    time.sleep(args.quiet_s)
                    phase[0] = "swaps"
                elif i == 101:
                    phase[0] = "after"
                swap_ms.append(swap(i))
            stop.set()
            thread.join()
            producer.close()
            seen = [ms for ms in swap_ms if ms is not None]
            quiet = float(np.percentile(latencies["quiet"], 99))
            during = float(np.percentile(latencies["swaps"], 99))
            growth = round(rss_mb(replica.pid) / rss_before - 1, 4)
            result |= {
                "swap_p99_ms": round(float(np.percentile(seen, 99)), 1),
                "swaps_seen": len(seen),
                "p99_during_swaps_ms": round(during, 2),
                "p99_quiet_between_swaps_ms": round(quiet, 2),
                "p99_during_swaps_vs_steady": round(during / quiet, 2),
                "failed_requests": failures[0],
                "requests_during_swaps": len(latencies["swaps"]),
                "rss_growth" if args.swaps < 1000 else "rss_growth_1000_swaps": growth,
                "swaps": args.swaps,
                "swap_loads": swap_loads(port),
            }
            batch = {k: tf.constant(v) for k, v in probe(Slot.load(builds[0]).inputs, 100).items()}
            serve = {
                n: tf.saved_model.load(str(d)).signatures[SIGNATURE]
                for n, d in (("hard_only", builds[0]), ("full_mtl", full_mtl))
            }
            p50 = interleaved_p50_ms(serve, batch, 300)
            result["hard_only_vs_full_mtl_latency"] = round(p50["hard_only"] / p50["full_mtl"], 3)
        finally:
            if replica is not None:
                replica.terminate()
                replica.wait(timeout=30)
            broker.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
