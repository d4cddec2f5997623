"""Every Kafka topic rarecvr uses, declared once, and their idempotent creation.

Clicks and conversions are keyed by click id and have the same partition count, so that a
conversion lands on the partition of its click and attribution needs no repartitioning. Task
assignments are compacted and keyed by setup id: the topic is the current assignment of every
setup, which any process can rebuild by reading it from the start.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from rarecvr import contracts, kafka_auth, settings


@dataclass(frozen=True)
class Topic:
    """A topic's name, partition count and topic-level configs.

    The full name is ``RARECVR_TOPIC_PREFIX`` (default ``rarecvr.``) and the base name, so that
    several stacks (or test runs) can share one Kafka cluster.
    """

    base: str
    partitions: int
    contract: type[contracts.Event]
    config: dict[str, str] = field(default_factory=dict)
    doc: str = ""
    #: Records hold one or more events, one JSON object a line (``contracts.join_lines``).
    batched: bool = False

    @property
    def name(self) -> str:
        return settings.topic_prefix() + self.base


#: Partitions of the event topics. Add partitions (and Faust workers) to scale out.
EVENT_PARTITIONS = 4

CLICKS = Topic(
    "clicks",
    EVENT_PARTITIONS,
    contracts.Click,
    doc="Click events, keyed by click id; a record holds one event or many, one a line, all of "
    "the partition their click ids give.",
    batched=True,
)
CONVERSIONS = Topic(
    "conversions",
    EVENT_PARTITIONS,
    contracts.Conversion,
    doc="Conversion events, keyed by their click id; one or many a record, as clicks.",
    batched=True,
)
LABELED_EXAMPLES = Topic(
    "labeled-examples",
    EVENT_PARTITIONS,
    contracts.LabeledExample,
    doc="Clicks whose label is final (converted, or attribution window closed), many a record: "
    "a worker step's labels of one event partition, sent to the partition of the same number.",
    batched=True,
)
TASK_ASSIGNMENTS = Topic(
    "task-assignments",
    1,
    contracts.TaskAssignment,
    {
        "cleanup.policy": "compact",
        "min.cleanable.dirty.ratio": "0.1",
        "segment.ms": "600000",
    },
    doc="Current hard/soft task of every setup, keyed by setup id (compacted).",
)
CVR_DELTAS = Topic(
    "cvr-deltas",
    EVENT_PARTITIONS,
    contracts.CvrDelta,
    doc="Internal to streams/: clicks and conversions counted per setup, keyed by setup id.",
)
MODEL_UPDATES = Topic(
    "model-updates",
    1,
    contracts.ModelUpdate,
    doc="Model registry events: a version published, pinned or rolled back.",
)
FEATURE_SCHEMA = Topic(
    "feature-schema",
    1,
    contracts.FeatureSchemaRecord,
    {"cleanup.policy": "compact"},
    doc="The click stream's feature schema, one record under one key (compacted): what the "
    "trainer builds its model from.",
)
DEAD_LETTERS = Topic(
    "dead-letters",
    1,
    contracts.DeadLetter,
    {"retention.ms": str(30 * 24 * 3600 * 1000)},
    doc="Events that failed validation, with their raw bytes and the reason.",
)

ALL: tuple[Topic, ...] = (
    CLICKS,
    CONVERSIONS,
    LABELED_EXAMPLES,
    CVR_DELTAS,
    TASK_ASSIGNMENTS,
    MODEL_UPDATES,
    FEATURE_SCHEMA,
    DEAD_LETTERS,
)


def ensure_topics(bootstrap: str, topics: tuple[Topic, ...] = ALL) -> list[str]:
    """Create the topics that do not exist yet; return the names that were created.

    Safe to call any number of times: an existing topic is left as it is.
    """
    return create_missing(
        bootstrap, [NewTopic(t.name, t.partitions, 1, topic_configs=t.config) for t in topics]
    )


def create_missing(bootstrap: str, topics: list[NewTopic]) -> list[str]:
    """Create those of ``topics`` that do not exist yet (any topic, not only rarecvr's own:
    a Faust app's changelogs too); return the names that were created."""
    admin = KafkaAdminClient(**kafka_auth.kafka_python(bootstrap), client_id="rarecvr-admin")
    try:
        existing = set(admin.list_topics())
        created = []
        for topic in topics:
            if topic.name in existing:
                continue
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass  # another process created it between list and create
        return created
    finally:
        admin.close()


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of ``key`` as Faust's producer (aiokafka's default partitioner, murmur2 as
    Java's) chooses it: records sent with an explicit partition land beside those sent by key."""
    every = list(range(partitions))
    return _partitioner()(key, every, every)


@functools.cache
def _partitioner():
    from aiokafka.partitioner import DefaultPartitioner

    return DefaultPartitioner()


def by_name(name: str) -> Topic:
    """A declared topic by its full name or its short name (``clicks`` for ``rarecvr.clicks``)."""
    for topic in ALL:
        if name in (topic.name, topic.base):
            return topic
    known = ", ".join(t.base for t in ALL)
    raise KeyError(f"unknown topic {name!r}; rarecvr's topics are: {known}")
