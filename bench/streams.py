"""Stream-worker throughput against consume-only loops, on a real broker, in one run.

    python -m bench.streams [--clicks 200000]

Starts a broker in a temporary directory and produces the same simulated stream twice: batched
(``BATCH_EVENTS`` events a record, as producers send by default) and one event a record. On the
single-event copy it times a bare aiokafka loop, Faust's own consume-only loop
(``bench.faust_consume``) and one `rarecvr worker`; on the batched copy, a second worker; each
worker from its first committed offset to its last. Prints one JSON line last:
``events_per_s_per_worker`` (batched; target >= 20,000), ``single_event_events_per_s``,
``faust_consume_only_events_per_s`` and ``single_event_ratio_to_faust`` (target >= 0.5),
``raw_consumer_events_per_s`` and ``ratio`` (batched worker to raw loop), with the batched
worker's resident memory at the start and end of processing, at each tenth of the
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
from rarecvr import kafka_auth, settings
from rarecvr.lag import group_progress
from rarecvr.produce import BATCH_EVENTS, produce
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


def time_worker(bootstrap: str, data_dir: Path, events: int) -> dict:
    """One ``rarecvr worker`` over the topics of the current prefix, from its first committed
    offset to its last: events/s and resident memory along the way."""
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rarecvr.cli",
            "worker",
            "--bootstrap",
            bootstrap,
            "--data-dir",
            str(data_dir),
            "--web-port",
            str(free_port()),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    group = settings.topic_prefix() + "streams"
    start = end = None
    rss, tenths = [], []
    try:
        while True:
            done, total = group_progress(bootstrap, group, [CLICKS, CONVERSIONS, CVR_DELTAS])
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
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    # Offsets count the delta topic too: scale to the source events it processed.
    processed = events * (total - start_done) / total
    return {"rate": processed / (end - start), "rss": rss, "tenths": tenths}


def time_faust_consume_only(bootstrap: str, records: int, out: Path) -> float:
    """Records/s of Faust's own consume-only loop (``bench.faust_consume``)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.faust_consume", bootstrap, str(records), str(out)]
        + ["worker", "-l", "warn"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 1800
        while not out.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the Faust consume-only loop died or did not finish")
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    result = json.loads(out.read_text())
    return result["records"] / result["seconds"]


def use_prefix(prefix: str) -> None:
    os.environ["RARECVR_TOPIC_PREFIX"] = prefix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=200_000)
    parser.add_argument(
        "--batched-only",
        action="store_true",
        help="Time only the worker on batched records (a long run for its memory).",
    )
    args = parser.parse_args()
    fetch()
    cfg = replace(SimConfig(), clicks=args.clicks, days=4.0)
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "kafka", log_level="WARN", heap="512m")
        info = broker.start()
        try:
            events, single, faust_rate, raw_s = {}, None, None, None
            copies = [("bench.batched.", BATCH_EVENTS)]
            copies += [] if args.batched_only else [("bench.single.", 1)]
            for prefix, batch in copies:
                use_prefix(prefix)
                ensure_topics(info.bootstrap)
                counts = produce(info.bootstrap, event_stream(Marketplace(cfg)), batch=batch)
                events[prefix] = sum(counts.values())
            if not args.batched_only:
                raw_s = asyncio.run(consume_all(info.bootstrap, events["bench.single."]))
                faust_rate = time_faust_consume_only(
                    info.bootstrap, events["bench.single."], Path(tmp) / "faust.json"
                )
                single = time_worker(info.bootstrap, Path(tmp) / "single", events["bench.single."])
            use_prefix("bench.batched.")
            batched = time_worker(info.bootstrap, Path(tmp) / "batched", events["bench.batched."])
        finally:
            broker.stop()
    rss, tenths = batched["rss"], batched["tenths"]
    compared = {}
    if single is not None:
        raw_rate = events["bench.single."] / raw_s
        compared = {
            "single_event_events_per_s": round(single["rate"]),
            "faust_consume_only_events_per_s": round(faust_rate),
            "single_event_ratio_to_faust": round(single["rate"] / faust_rate, 3),
            "raw_consumer_events_per_s": round(raw_rate),
            "ratio": round(batched["rate"] / raw_rate, 3),
        }
    print(
        json.dumps(
            {
                "events_per_s_per_worker": round(batched["rate"]),
                **compared,
                "events_per_record": BATCH_EVENTS,
                "events": events["bench.batched."],
                "worker_rss_mb_start": round(rss[0], 1),
                "worker_rss_mb_end": round(rss[-1], 1),
                "worker_rss_mb_by_tenth": [round(r, 1) for r in tenths],
                "rss_growth_after_first_tenth": round(rss[-1] / tenths[0] - 1, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
