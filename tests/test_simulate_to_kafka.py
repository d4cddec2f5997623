"""`rarecvr simulate --to kafka` fills the real broker's topics with every event it generated."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

from kafka import KafkaConsumer, TopicPartition

from rarecvr.topics import CLICKS, CONVERSIONS
from simulator import Faults, Marketplace, SimConfig
from simulator.events import event_stream
from tests.streams_harness import events_of

ARGS = [
    "--clicks",
    "5000",
    "--advertisers",
    "30",
    "--days",
    "2",
    "--seed",
    "11",
    "--duplicates",
    "0.01",
    "--malformed",
    "0.01",
]


def end_offsets(bootstrap):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    parts = [TopicPartition(t.name, p) for t in (CLICKS, CONVERSIONS) for p in range(t.partitions)]
    ends = consumer.end_offsets(parts)
    consumer.close()
    return ends


def read_from(bootstrap, starts):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=5000)
    consumer.assign(list(starts))
    for tp, offset in starts.items():
        consumer.seek(tp, offset)
    values = Counter((record.topic, raw) for record in consumer for raw in events_of(record))
    consumer.close()
    return values


def test_simulate_to_kafka_sends_every_generated_event(kafka, report):
    before = end_offsets(kafka.bootstrap)
    result = subprocess.run(
        [sys.executable, "-m", "rarecvr.cli", "simulate", "--to", "kafka", *ARGS],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RARECVR_BOOTSTRAP": kafka.bootstrap},
    )
    assert result.returncode == 0, result.stderr
    cfg = SimConfig(
        clicks=5000, advertisers=30, days=2, seed=11, faults=Faults(duplicate=0.01, malformed=0.01)
    )
    expected = Counter((r.topic, r.value) for r in event_stream(Marketplace(cfg)))
    received = read_from(kafka.bootstrap, before)
    assert received == expected
    assert sum(expected.values()) > 5000
    report(f"simulate --to kafka: {sum(received.values())} events sent and read back")
