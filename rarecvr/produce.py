"""Send records (keyed events for a topic) to Kafka in order, at full speed or in compressed
event time. The simulator and ``rarecvr replay`` both produce through it.

Events for a batched topic (``Topic.batched``: clicks, conversions) travel many a Kafka record:
per partition (the one each event's key gives, so a conversion still lands beside its click),
one JSON object a line, a record sent when it holds ``batch`` events or ``RECORD_BYTES``, or
has waited ``linger_s`` of wall time. A consumer then pays for one record per batch instead of
per event (Faust's per-record path caps a worker near 10,000 records/s); ``batch=1`` sends one
event a record.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kafka import KafkaProducer

from rarecvr import kafka_auth
from rarecvr.contracts import RECORD_BYTES
from rarecvr.topics import ALL, partition_of

#: Events per record of a batched topic, and the wall time a record waits to fill.
BATCH_EVENTS = 500
LINGER_S = 0.1


@dataclass(frozen=True, slots=True)
class Record:
    """One record for a topic, with its event time and the fault it carries (None if valid)."""

    topic: str
    key: bytes
    value: bytes
    ts_ms: int
    fault: str | None = None
    partition: int | None = None  #: None: the partition of the key


class Batches:
    """Open records of batched topics, per (topic, partition): lines and when the first came."""

    def __init__(self, producer: KafkaProducer, batch: int, linger_s: float):
        self.producer, self.batch, self.linger_s = producer, batch, linger_s
        #: the batched topics by full name (the prefix is read now: tests change it)
        self.topics = {topic.name: topic for topic in ALL if topic.batched} if batch > 1 else {}
        self.open: dict[tuple[str, int], tuple[list[bytes], int, float]] = {}

    def add(self, record: Record) -> None:
        topic = self.topics[record.topic]
        p = record.partition
        p = partition_of(record.key, topic.partitions) if p is None else p
        lines, size, since = self.open.get((record.topic, p), ([], 0, time.monotonic()))
        if lines and size + 1 + len(record.value) > RECORD_BYTES:
            self.send(record.topic, p, lines)
            lines, size, since = [], 0, time.monotonic()
        lines.append(record.value)
        self.open[record.topic, p] = (lines, size + 1 + len(record.value), since)
        if len(lines) >= self.batch:
            self.send(record.topic, p, lines)
            del self.open[record.topic, p]

    def send(self, topic: str, p: int, lines: list[bytes]) -> None:
        self.producer.send(topic, key=str(p).encode(), value=b"\n".join(lines), partition=p)

    def flush_due(self, everything: bool = False) -> None:
        """Send the records that have lingered long enough (all of them with ``everything``)."""
        now = time.monotonic()
        for (topic, p), (lines, _, since) in list(self.open.items()):
            if everything or now - since >= self.linger_s:
                self.send(topic, p, lines)
                del self.open[topic, p]

    def next_due(self) -> float | None:
        """Seconds until the oldest open record is due (None: none is open)."""
        if not self.open:
            return None
        oldest = min(since for _, _, since in self.open.values())
        return max(oldest + self.linger_s - time.monotonic(), 0.0)


def produce(
    bootstrap: str,
    records: Iterable[Record],
    speed: float | None = None,
    progress: Callable[[Record], None] | None = None,
    batch: int = BATCH_EVENTS,
    linger_s: float = LINGER_S,
) -> Counter:
    """Produce every record (keyed by click id) and return counts by (topic, fault).

    With ``speed`` set, event time is compressed by that factor: a record is sent when the wall
    clock has advanced ``(ts - first ts) / speed`` since the first one. Without it, records go
    as fast as the broker takes them. Events of batched topics go ``batch`` a record at most.
    """
    producer = KafkaProducer(
        **kafka_auth.kafka_python(bootstrap),
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        max_in_flight_requests_per_connection=1,  # keeps each partition in send order
    )
    counts: Counter = Counter()
    batches = Batches(producer, batch, linger_s)
    first_ts = started = None
    try:
        for record in records:
            if speed:
                if first_ts is None:
                    first_ts, started = record.ts_ms, time.monotonic()
                due = started + (record.ts_ms - first_ts) / 1000.0 / speed
                while (wait := due - time.monotonic()) > 0.002:
                    batches.flush_due()
                    producer.flush()
                    due_batch = batches.next_due()
                    time.sleep(wait if due_batch is None else min(wait, max(due_batch, 0.001)))
            if record.topic in batches.topics:
                batches.add(record)
            else:
                producer.send(
                    record.topic, key=record.key, value=record.value, partition=record.partition
                )
            counts[(record.topic, record.fault)] += 1
            if progress is not None:
                progress(record)
            batches.flush_due()
        batches.flush_due(everything=True)
        producer.flush()
    finally:
        producer.close()
    return counts
