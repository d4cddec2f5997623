"""Malformed records a topic reader skips: logged with the reason and counted by topic.

A reader that only follows a topic (assignments, model updates, the feature schema) has no one
to hand a bad record to, so it sets the record aside and reads on; the stages that consume
events or examples send theirs to the dead-letter topic instead. The count tells an operator
that something writes garbage to a topic that only rarecvr should write.

>>> from rarecvr.contracts import ContractError
>>> skipped("doctest.topic", ContractError("task_assignment", "", "not valid JSON"))
>>> from prometheus_client import REGISTRY
>>> REGISTRY.get_sample_value(SKIPPED_TOTAL, {"topic": "doctest.topic"})
1.0
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

log = logging.getLogger(__name__)

SKIPPED_TOTAL = "rarecvr_malformed_records_skipped_total"
SKIPPED = Counter(
    SKIPPED_TOTAL,
    "Malformed records a topic reader set aside (each logged with its reason), by topic.",
    ["topic"],
)


def skipped(topic: str, error: Exception) -> None:
    """Count and log a malformed record of ``topic`` that a reader set aside."""
    SKIPPED.labels(topic).inc()
    log.warning("skipped a malformed record of %s: %s", topic, error)
