"""How far a consumer group has got: its committed offsets against the topics' end offsets."""

from __future__ import annotations

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from rarecvr import kafka_auth
from rarecvr.topics import Topic


def group_progress(bootstrap: str, group: str, topics: list[Topic]) -> tuple[int, int]:
    """(committed, end) offsets of ``group``, summed over every partition of ``topics``.

    A group whose coordinator is not ready yet, or that has committed nothing, has 0.
    """
    parts = [TopicPartition(t.name, p) for t in topics for p in range(t.partitions)]
    consumer = KafkaConsumer(**kafka_auth.kafka_python(bootstrap))
    try:
        ends = consumer.end_offsets(parts)
    finally:
        consumer.close()
    admin = KafkaAdminClient(**kafka_auth.kafka_python(bootstrap))
    try:
        committed = admin.list_group_offsets({group: parts}).get(group, {})
    except KafkaError:
        committed = {}
    finally:
        admin.close()
    done = sum(max(committed[tp].offset, 0) for tp in parts if tp in committed)
    return done, sum(ends.values())
