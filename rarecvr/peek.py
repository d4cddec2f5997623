"""Read a topic from the start and check every record against its contract.

``rarecvr peek clicks`` is how a user looks at what is really on a topic: valid events are
summarised, and a malformed one is reported with its offset and the field that is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

from rarecvr.contracts import ContractError, Event, decode
from rarecvr.topics import Topic


@dataclass(frozen=True)
class Checked:
    """One record of a topic: its position, and either the event or the contract error."""

    partition: int
    offset: int
    event: Event | None
    error: ContractError | None


def check_topic(bootstrap: str, topic: Topic, timeout_s: float = 5.0) -> Iterator[Checked]:
    """Every record now on ``topic``, validated, in partition then offset order."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
        isolation_level="read_committed",
    )
    try:
        partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        batches: dict[int, list[Checked]] = {tp.partition: [] for tp in partitions}
        while remaining:
            polled = consumer.poll(timeout_ms=int(timeout_s * 1000))
            if not polled:
                break
            for tp, records in polled.items():
                for record in records:
                    batches[tp.partition].append(validate(topic, record.partition, record))
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        for partition in sorted(batches):
            yield from batches[partition]
    finally:
        consumer.close()


def validate(topic: Topic, partition: int, record) -> Checked:
    try:
        return Checked(partition, record.offset, decode(topic.contract, record.value), None)
    except ContractError as exc:
        return Checked(partition, record.offset, None, exc)
