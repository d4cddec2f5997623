"""Faust's commit offset against the worker's transport (streams.faust_commit), side by side:
offsets acknowledged twice, a hole of one offset at the head, offsets the fetcher saw skipped
and the record after them; when the worker's transport reads a partition again; and a flush
whose buffered messages are slow to hand over."""

import asyncio
import time
from types import SimpleNamespace

import faust
import pytest
from faust.transport import producer as faust_producer
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


@pytest.mark.parametrize(("transport", "expected"), [(faust_driver, 11), (faust_commit, 9)])
def test_the_record_that_reveals_a_gap_counts_only_once_acknowledged(transport, expected):
    # read up to 5, then record 9 arrives (6-8 are a gap) and is still in flight, or was
    # dropped, when 10 is acknowledged: Faust commits over it
    consumer = consumer_with(transport.Transport, 5, [5, 10])
    asyncio.run(consumer._add_gap(TOPIC, 6, 9))
    assert consumer._new_offset(TOPIC) == expected


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


class SlowChannel:
    """A channel whose hand-over to the client takes ``seconds`` (aiokafka waiting for room)."""

    def __init__(self, seconds: float):
        self.seconds, self.published = seconds, []

    async def publish_message(self, fut, wait: bool = False):
        await asyncio.sleep(self.seconds)
        self.published.append(fut)


def handed_over_after_flush(buffer_class, messages: int, seconds: float) -> int:
    """How many of ``messages`` queued on a buffer with a slow hand-over its flush saw handed
    over before it returned."""

    async def run() -> int:
        app = faust.App("test-flush", broker="kafka://127.0.0.1:9")
        buffer = buffer_class()
        buffer.app = app
        channel = SlowChannel(seconds)
        await buffer.start()
        try:
            for _ in range(messages):
                buffer.put(SimpleNamespace(message=SimpleNamespace(channel=channel)))
            await buffer.flush()
            return len(channel.published)
        finally:
            while len(channel.published) < messages:  # let it drain before it stops
                await asyncio.sleep(0.05)
            await buffer.stop()

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("buffer_class", "handed_over"),
    [(faust_producer.ProducerBuffer, 0), (faust_commit.ProducerBuffer, 3)],
)
def test_a_flush_waits_for_every_buffered_message_however_slow_its_hand_over(
    buffer_class, handed_over
):
    # Faust's flush gives up after 0.1 s without a hand-over: the commit after it would then
    # cover records whose changelog writes were still in the buffer
    assert handed_over_after_flush(buffer_class, 3, seconds=0.25) == handed_over


def test_the_worker_transport_makes_producers_with_the_safe_buffer():
    app = faust.App("test-flush", broker="kafka://127.0.0.1:9")
    app.transport = faust_commit.Transport(app.conf.broker_consumer, app)
    assert isinstance(app.producer.buffer, faust_commit.ProducerBuffer)
