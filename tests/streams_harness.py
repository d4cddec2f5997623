"""Helpers for the stream-worker integration tests: run workers as processes, wait for them to
catch up, and recompute labels and CVR state from the event log in batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from deploy.kafka.broker import free_port
from rarecvr import kafka_auth, lag
from rarecvr.contracts import split_lines
from rarecvr.produce import BATCH_EVENTS, produce
from rarecvr.topics import CLICKS, CONVERSIONS, CVR_DELTAS, DEAD_LETTERS, LABELED_EXAMPLES
from simulator import Faults, Marketplace, SimConfig
from simulator.events import event_stream

WINDOW_MS = 6 * 3_600_000
LATENESS_MS = 5 * 60_000
HALF_LIFE_MS = 7 * 86_400_000


class Workers:
    """Stream worker processes of one test, with their own topic prefix and data dirs."""

    def __init__(self, bootstrap: str, root: Path, env: dict):
        self.bootstrap, self.root, self.env = bootstrap, root, env
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, *extra: str) -> subprocess.Popen:
        port = self.ports.setdefault(name, free_port())
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rarecvr.cli",
                "worker",
                "--bootstrap",
                self.bootstrap,
                "--data-dir",
                str(self.root / name),
                "--web-port",
                str(port),
                "--window-days",
                str(WINDOW_MS / 86_400_000),
                "--lateness-minutes",
                str(LATENESS_MS / 60_000),
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig=signal.SIGKILL, timeout: float = 60) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=timeout)

    def stop_all(self) -> None:
        for name in list(self.procs):
            try:
                self.kill(name, signal.SIGTERM, timeout=30)
            except subprocess.TimeoutExpired:
                self.procs.get(name, None) and self.procs[name].kill()

    def log(self, name: str, tail: int | None = 3000) -> str:
        text = (self.root / f"{name}.log").read_text(errors="replace")
        return text if tail is None else text[-tail:]


def group_progress(bootstrap: str, group: str) -> tuple[int, int]:
    """(committed, end) offsets summed over the worker's source topics."""
    return lag.group_progress(bootstrap, group, [CLICKS, CONVERSIONS, CVR_DELTAS])


def wait_caught_up(bootstrap: str, group: str, workers: Workers, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, end = group_progress(bootstrap, group)
        if end and done >= end:
            return
        for name, proc in workers.procs.items():
            assert proc.poll() is None, f"worker {name} died:\n{workers.log(name)}"
        time.sleep(1)
    logs = "\n".join(f"--- {name}:\n{workers.log(name)}" for name in workers.procs)
    raise AssertionError(f"workers did not catch up: {group_progress(bootstrap, group)}\n{logs}")


def read_topic(bootstrap: str, topic) -> list:
    consumer = KafkaConsumer(
        **kafka_auth.kafka_python(bootstrap),
        consumer_timeout_ms=3000,
        isolation_level="read_committed",
    )
    parts = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    records = list(consumer)
    consumer.close()
    return records


def labels_from_topic(bootstrap: str) -> dict[str, dict]:
    """Labeled examples by click id; a click sent twice must carry the same example."""
    examples: dict[str, dict] = {}
    for record in read_topic(bootstrap, LABELED_EXAMPLES):
        for line in split_lines(record.value):
            example = json.loads(line)
            previous = examples.setdefault(example["click_id"], example)
            assert previous == example, f"conflicting examples: {previous} and {example}"
    return examples


def dead_letters(bootstrap: str) -> list[dict]:
    return [json.loads(r.value) for r in read_topic(bootstrap, DEAD_LETTERS)]


def events_of(record) -> list[bytes]:
    """The events of a click or conversion record: one, or many a line."""
    return split_lines(record.value or b"") or [record.value or b""]


def where(bootstrap: str, click_ids: set[str]) -> str:
    """Where the clicks ``click_ids`` were read: per partition, how many, their record offsets
    and event times, beside the partition's last click time (a stuck watermark leaves a
    partition's newest clicks unlabeled; lost states leave a run in the middle)."""
    found, newest = defaultdict(list), defaultdict(int)
    for record in read_topic(bootstrap, CLICKS):
        for raw in events_of(record):
            try:
                event = json.loads(raw)
                newest[record.partition] = max(newest[record.partition], event["ts_ms"])
            except (ValueError, KeyError, TypeError):
                continue
            if event.get("event_id") in click_ids:
                found[record.partition].append((record.offset, event["ts_ms"]))
    return "; ".join(
        f"partition {p}: {len(v)} at offsets {min(v)[0]}-{max(v)[0]}, "
        f"ts {min(t for _, t in v)}-{max(t for _, t in v)} (newest click {newest[p]})"
        for p, v in sorted(found.items())
    )


def batch_truth(
    bootstrap: str, history: dict[str, dict] | None = None
) -> tuple[dict[str, int], dict[str, dict]]:
    """Labels and per-setup decayed sums recomputed from the event log on the topics, the sums
    with ``history``'s click and conversion times (per setup) added."""
    clicks, conversions = {}, {}
    latest = defaultdict(lambda: {"clicks": -1, "conversions": -1})
    for topic, store in ((CLICKS, clicks), (CONVERSIONS, conversions)):
        lines = ((r, raw) for r in read_topic(bootstrap, topic) for raw in events_of(r))
        for record, raw in lines:
            try:
                event = json.loads(raw)
                if not isinstance(event.get("ts_ms"), int) or event["ts_ms"] < 0:
                    raise ValueError
                if not event.get("event_id") or not event.get("setup_id"):
                    raise ValueError
            except ValueError:
                continue  # malformed: the worker dead-letters it
            key = event["event_id"] if topic is CLICKS else event["click_id"]
            store.setdefault(key, (event, record.partition))
            kind = "clicks" if topic is CLICKS else "conversions"
            latest[record.partition][kind] = max(latest[record.partition][kind], event["ts_ms"])
    watermark = {p: min(v.values()) - LATENESS_MS for p, v in latest.items()}
    labels, sums = {}, defaultdict(lambda: {"clicks": [], "conversions": []})
    for setup, times in (history or {}).items():
        sums[setup]["clicks"].extend(times["clicks"])
        sums[setup]["conversions"].extend(times["conversions"])
    for cid, (click, partition) in clicks.items():
        sums[click["setup_id"]]["clicks"].append(click["ts_ms"])
        conversion = conversions.get(cid)
        attributed = bool(conversion) and 0 <= conversion[0]["ts_ms"] - click["ts_ms"] <= WINDOW_MS
        if attributed:  # the setup's CVR counts it at once
            sums[click["setup_id"]]["conversions"].append(conversion[0]["ts_ms"])
        if click["ts_ms"] + WINDOW_MS <= watermark[partition]:  # the label waits for the close
            labels[cid] = int(attributed)
    state = {}
    for setup, times in sums.items():
        now = max(times["clicks"] + times["conversions"])
        state[setup] = {
            kind: sum(2 ** (-(now - t) / HALF_LIFE_MS) for t in ts) for kind, ts in times.items()
        }
    return labels, state


def environment(prefix: str) -> dict:
    return {**os.environ, "RARECVR_TOPIC_PREFIX": prefix, "PYTHONUNBUFFERED": "1"}


def send(bootstrap, clicks, speed=None, batch=BATCH_EVENTS, **faults):
    """Simulated clicks and conversions (with ``faults``) produced to the event topics, ``batch``
    events a record (at ``speed``: event time compressed that much)."""
    cfg = SimConfig(clicks=clicks, advertisers=60, days=2.0, seed=5, faults=Faults(**faults))
    return produce(bootstrap, event_stream(Marketplace(cfg)), speed=speed, batch=batch)


def assert_matches_batch(bootstrap, workers, name):
    """The worker's labels and its first setups' CVR state equal a batch recomputation."""
    truth, state = batch_truth(bootstrap)
    labels = {cid: ex["label"] for cid, ex in labels_from_topic(bootstrap).items()}
    missing, extra = truth.keys() - labels.keys(), labels.keys() - truth.keys()
    differ = {c for c in truth.keys() & labels.keys() if truth[c] != labels[c]}
    assert not (missing or extra or differ), (
        f"{len(missing)} clicks unlabeled (e.g. {sorted(missing)[:5]}; "
        f"{where(bootstrap, missing)}),"
        f" {len(extra)} labeled but not in batch ({sorted(extra)[:5]}), {len(differ)} with "
        f"another label ({sorted(differ)[:5]})"
    )
    assert 0 < sum(truth.values()) < len(truth)
    port = workers.ports[name]
    checked = 0
    for setup, expected in sorted(state.items())[:25]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/cvr/{setup}", timeout=10) as r:
            got = json.loads(r.read())
        assert got["clicks"] == pytest.approx(expected["clicks"], rel=1e-9), setup
        assert got["conversions"] == pytest.approx(expected["conversions"], rel=1e-9, abs=1e-12)
        checked += 1
    assert checked == 25
    return truth
