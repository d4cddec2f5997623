"""Send records (keyed events for a topic) to Kafka in order, at full speed or in compressed
event time. The simulator and ``rarecvr replay`` both produce through it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kafka import KafkaProducer

from rarecvr import kafka_auth


@dataclass(frozen=True, slots=True)
class Record:
    """One record for a topic, with its event time and the fault it carries (None if valid)."""

    topic: str
    key: bytes
    value: bytes
    ts_ms: int
    fault: str | None = None
    partition: int | None = None  #: None: the partition of the key


def produce(
    bootstrap: str,
    records: Iterable[Record],
    speed: float | None = None,
    progress: Callable[[Record], None] | None = None,
) -> Counter:
    """Produce every record (keyed by click id) and return counts by (topic, fault).

    With ``speed`` set, event time is compressed by that factor: a record is sent when the wall
    clock has advanced ``(ts - first ts) / speed`` since the first one. Without it, records go
    as fast as the broker takes them.
    """
    producer = KafkaProducer(
        **kafka_auth.kafka_python(bootstrap),
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        max_in_flight_requests_per_connection=1,  # keeps each partition in send order
    )
    counts: Counter = Counter()
    first_ts = started = None
    try:
        for record in records:
            if speed:
                if first_ts is None:
                    first_ts, started = record.ts_ms, time.monotonic()
                due = started + (record.ts_ms - first_ts) / 1000.0 / speed
                wait = due - time.monotonic()
                if wait > 0.002:
                    producer.flush()
                    time.sleep(wait)
            producer.send(
                record.topic, key=record.key, value=record.value, partition=record.partition
            )
            counts[(record.topic, record.fault)] += 1
            if progress is not None:
                progress(record)
        producer.flush()
    finally:
        producer.close()
    return counts
