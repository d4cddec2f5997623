"""Faust's commit offset against the worker's transport (streams.faust_commit), side by side:
offsets acknowledged twice, a hole of one offset at the head, and offsets the fetcher saw
skipped; and when the worker's transport reads a partition again."""

import time

import faust
import pytest
from faust.transport.drivers import aiokafka as faust_driver
from faust.types import TP

from streams import faust_commit

TOPIC = TP("clicks", 0)


async def _noop(*args):
    return None


def consumer_with(transport_class, committed: int, acked: list[int], gap=None):
    app = faust.App("test-commit", broker="kafka://127.0.0.1:9")
    consumer = transport_class(app.conf.broker_consumer, app).create_consumer(
        callback=_noop, on_partitions_revoked=_noop, on_partitions_assigned=_noop
    )
    consumer._committed_offset[TOPIC] = committed
    consumer._acked[TOPIC] = list(acked)
    consumer._acked_index[TOPIC] = set(acked)
    if gap is not None:
        consumer._gap[TOPIC].addi(*gap)
    return consumer


def new_offset(transport_class, committed: int, acked: list[int], gap=None) -> int | None:
    return consumer_with(transport_class, committed, acked, gap)._new_offset(TOPIC)


@pytest.mark.parametrize(("transport", "expected"), [(faust_driver, 6), (faust_commit, 8)])
def test_offsets_acknowledged_twice_are_committed_in_one_step(transport, expected):
    assert new_offset(transport.Transport, 5, [5, 5, 6, 6, 7]) == expected


@pytest.mark.parametrize(("transport", "expected"), [(faust_driver, 8), (faust_commit, None)])
def test_an_unacknowledged_next_offset_holds_the_commit(transport, expected):
    # offset 5 is in flight (or was dropped at a rebalance): committing 8 would lose it
    assert new_offset(transport.Transport, 5, [6, 7]) == expected


def test_offsets_the_fetcher_saw_skipped_count_as_acknowledged():
    assert new_offset(faust_commit.Transport, 5, [7, 8], gap=(5, 7)) == 9


def test_a_larger_hole_holds_the_commit_as_in_faust():
    assert new_offset(faust_commit.Transport, 5, [8, 9]) is None


def test_a_next_offset_missing_too_long_has_the_partition_read_again_from_it():
    consumer = consumer_with(faust_commit.Transport, 5, [6, 7])
    assert consumer._new_offset(TOPIC) is None
    now = time.monotonic()
    assert consumer.stalled_partitions(now) == {}  # may still be in flight
    assert consumer.stalled_partitions(now + faust_commit.STALL_RESEEK_S) == {TOPIC: 5}
    consumer._acked[TOPIC].append(5)  # read again and acknowledged
    assert consumer._new_offset(TOPIC) == 8
    assert consumer.stalled_partitions(now + faust_commit.STALL_RESEEK_S) == {}
