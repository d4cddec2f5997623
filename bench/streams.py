"""Stream-worker throughput against a consume-only loop, on a real broker, in one run.

    python -m bench.streams [--clicks 200000]

Starts a broker in a temporary directory, produces a simulated stream, times a consume-only
aiokafka loop over the same topics, then one `rarecvr worker` process from its first committed
offset to its last. Prints one JSON line last: ``events_per_s_per_worker``,
``raw_consumer_events_per_s`` and their ``ratio`` (targets: >= 20,000 events/s and >= 0.4),
with the worker's resident memory at the start and end of processing, at each tenth of the
way (``worker_rss_mb_by_tenth``), and its growth from the first tenth to the end
(``rss_growth_after_first_tenth``: the target is memory flat within 10% over a long run; the
first tenth holds the start-up and the filling of the attribution window's state).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from deploy.kafka import Broker, fetch
from deploy.kafka.broker import free_port
from rarecvr import kafka_auth
from rarecvr.lag import group_progress
from rarecvr.produce import produce
from rarecvr.topics import CLICKS, CONVERSIONS, CVR_DELTAS, ensure_topics
from simulator import Marketplace, SimConfig
from simulator.events import event_stream


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def consume_all(bootstrap: str, total: int) -> float:
    """Seconds a bare aiokafka consumer takes to read ``total`` records of both topics."""
    consumer = AIOKafkaConsumer(
        CLICKS.name,
        CONVERSIONS.name,
        **kafka_auth.aiokafka(bootstrap),
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    seen, started = 0, time.perf_counter()
    try:
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(records) for records in batches.values())
    finally:
        await consumer.stop()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=200_000)
    args = parser.parse_args()
    os.environ["RARECVR_TOPIC_PREFIX"] = "bench."
    fetch()
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "kafka", log_level="WARN", heap="512m")
        info = broker.start()
        try:
            ensure_topics(info.bootstrap)
            cfg = replace(SimConfig(), clicks=args.clicks, days=4.0)
            counts = produce(info.bootstrap, event_stream(Marketplace(cfg)))
            events = sum(counts.values())
            raw_s = asyncio.run(consume_all(info.bootstrap, events))
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rarecvr.cli",
                    "worker",
                    "--bootstrap",
                    info.bootstrap,
                    "--data-dir",
                    str(Path(tmp) / "worker"),
                    "--web-port",
                    str(free_port()),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=os.environ.copy(),
            )
            group = "bench.streams"
            start = end = None
            rss, tenths = [], []
            while True:
                done, total = group_progress(
                    info.bootstrap, group, [CLICKS, CONVERSIONS, CVR_DELTAS]
                )
                now = time.perf_counter()
                if start is None and done > 0:
                    start, start_done = now, done
                    rss.append(rss_mb(worker.pid))
                if start is not None:
                    while len(tenths) < 10 and done >= total * (len(tenths) + 1) / 10:
                        tenths.append(rss_mb(worker.pid))
                if start is not None and done >= total:
                    end = now
                    rss.append(rss_mb(worker.pid))
                    break
                if worker.poll() is not None:
                    raise SystemExit("the worker died")
                time.sleep(0.5)
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
        finally:
            broker.stop()
    # Offsets count the delta topic too: scale to the source events it processed.
    processed = events * (total - start_done) / total
    worker_rate = processed / (end - start)
    raw_rate = events / raw_s
    print(
        json.dumps(
            {
                "events_per_s_per_worker": round(worker_rate),
                "raw_consumer_events_per_s": round(raw_rate),
                "ratio": round(worker_rate / raw_rate, 3),
                "events": events,
                "worker_rss_mb_start": round(rss[0], 1),
                "worker_rss_mb_end": round(rss[-1], 1),
                "worker_rss_mb_by_tenth": [round(r, 1) for r in tenths],
                "rss_growth_after_first_tenth": round(rss[-1] / tenths[0] - 1, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
