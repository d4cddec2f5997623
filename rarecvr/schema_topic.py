"""The feature schema on its compacted topic: published with the clicks, read by the trainer."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition

from rarecvr import kafka_auth
from rarecvr.contracts import ContractError, FeatureSchemaRecord, decode, encode
from rarecvr.malformed import skipped
from rarecvr.produce import Record, produce
from rarecvr.schema import FeatureSchema
from rarecvr.topics import FEATURE_SCHEMA, ensure_topics

KEY = b"schema"


def schema_record(schema: FeatureSchema, source: str, ts_ms: int) -> Record:
    """The record that publishes ``schema``; produce it before the clicks it describes."""
    event = FeatureSchemaRecord(
        categorical=list(schema.categorical),
        numeric=list(schema.numeric),
        source=source[-1024:],
        published_ms=int(time.time() * 1000),
    )
    return Record(FEATURE_SCHEMA.name, KEY, encode(event), ts_ms)


def publish_schema(bootstrap: str, schema: FeatureSchema, source: str) -> None:
    """Publish ``schema`` (creating the topic if needed); do it before the clicks it describes."""
    ensure_topics(bootstrap, (FEATURE_SCHEMA,))
    produce(bootstrap, [schema_record(schema, source, int(time.time() * 1000))])


def latest_schema(bootstrap: str, wait_s: float = 0.0) -> tuple[FeatureSchema, str] | None:
    """The last valid schema on the topic and its source, waiting up to ``wait_s`` for one to be
    published; None if there is none by then."""
    consumer = KafkaConsumer(**kafka_auth.kafka_python(bootstrap), enable_auto_commit=False)
    partition = TopicPartition(FEATURE_SCHEMA.name, 0)
    deadline = time.monotonic() + wait_s
    found = None
    try:
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        while True:
            end = consumer.end_offsets([partition])[partition]
            while consumer.position(partition) < end:
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        try:
                            event = decode(FeatureSchemaRecord, record.value or b"")
                        except ContractError as error:
                            skipped(FEATURE_SCHEMA.name, error)
                            continue  # a malformed record does not hide the last good one
                        found = FeatureSchema(tuple(event.categorical), tuple(event.numeric))
                        found = (found, event.source)
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.5)
    finally:
        consumer.close()
