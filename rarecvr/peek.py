"""Read a topic from the start and check every record against its contract.

``rarecvr peek clicks`` is how a user looks at what is really on a topic: valid events are
summarised, and a malformed one is reported with its offset and the field that is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

from rarecvr import kafka_auth
from rarecvr.contracts import ContractError, Event, decode, split_lines
from rarecvr.topics import Topic


@dataclass(frozen=True)
class Checked:
    """One record of a topic: its position, and either the event or the contract error."""

    partition: int
    offset: int
    event: Event | None
    error: ContractError | None


def check_topic(
    bootstrap: str, topic: Topic, start: dict[int, int] | None = None, timeout_s: float = 5.0
) -> Iterator[Checked]:
    """Every record now on ``topic`` (from offset ``start[partition]``, default the beginning),
    validated, in partition then offset order."""
    consumer = KafkaConsumer(
        **kafka_auth.kafka_python(bootstrap),
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
        isolation_level="read_committed",
    )
    try:
        partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        for tp in partitions:
            if start and start.get(tp.partition):
                consumer.seek(tp, start[tp.partition])
        ends = consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > consumer.position(tp)}
        batches: dict[int, list[Checked]] = {tp.partition: [] for tp in partitions}
        while remaining:
            polled = consumer.poll(timeout_ms=int(timeout_s * 1000))
            if not polled:
                break
            for tp, records in polled.items():
                for record in records:
                    batches[tp.partition] += validate(topic, record.partition, record)
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        for partition in sorted(batches):
            yield from batches[partition]
    finally:
        consumer.close()


def validate(topic: Topic, partition: int, record) -> list[Checked]:
    """The record's event checked, or each of its events for a batched topic."""
    events = split_lines(record.value or b"") if topic.batched else [record.value]
    checked = []
    for raw in events:
        try:
            checked.append(Checked(partition, record.offset, decode(topic.contract, raw), None))
        except ContractError as exc:
            checked.append(Checked(partition, record.offset, None, exc))
    return checked


def end_offsets(bootstrap: str, topic: Topic) -> dict[int, int]:
    """The next offset of every partition of ``topic``: where new records will start."""
    consumer = KafkaConsumer(**kafka_auth.kafka_python(bootstrap))
    try:
        parts = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()
