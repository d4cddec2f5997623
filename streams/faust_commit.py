"""Faust's Kafka transport with its commit offset and its flush made safe for the worker.

Faust commits, per partition, the end of the first run of consecutive acknowledged offsets
(``Consumer._new_offset``). Three of its rules failed the worker's SIGKILL test:

- **An offset acknowledged twice stalled commits.** After a restart the fetcher can hand a
  stream the same records again; the sorted list then holds an offset twice, every duplicate
  ends a run, and each commit advanced to the next duplicate only: one record a commit
  interval (robinhood/faust#625 and #559 describe the same state).
- **A one-offset hole at the head was committed over.** Faust waits while the first
  acknowledged offset is more than one past the committed offset, but commits over a hole of
  exactly one (faust-streaming/faust#606): a record still in flight, or one dropped when a
  rebalance suspended the flow, is then never read again. With commits no longer stalled by
  duplicates, that lost a click in CI.
- **A record arriving after a gap counted as acknowledged at once.** When a record comes more
  than one offset past the last one read, Faust records the offsets between as a gap (they
  count as acknowledged: compaction or transaction markers left no record there), but its
  interval ends at the arriving record itself (``_add_gap(tp, read + 1, offset)``, end
  included), so the arriving record counts as acknowledged while still in flight. Most likely
  (not traced step by step) a rebalance sought a partition back while later records were still
  buffered, those were acknowledged, and the commit passed the record in flight: a SIGKILL
  lost exactly one record in each of three partitions, the one after the last record the
  tables had applied. Here a gap ends before the record that revealed it.

A fourth rule lost table writes: **a flush returned with messages still buffered.** Before a
commit Faust flushes its producer, whose first stage is a buffer of the messages
``send_soon`` queued (every table write's changelog record, every label), drained by one task
that hands each to aiokafka. ``ProducerBuffer.flush`` returns as soon as no message was handed
over for 0.1 s, so a busy event loop or a slow hand-over (aiokafka waiting for room in its
accumulator) let the commit go ahead while changelog records of the committed records were
still in the buffer; a SIGKILL then lost them (the SIGKILL test: a restart restored exactly the
tables of the restart before it, and the clicks read in between were never labeled). Here a
flush waits until every message put before it has been handed over, then for aiokafka's own
flush as before.

Here duplicates are removed, offsets the fetcher saw skipped (Faust's gap intervals) count as
acknowledged as in Faust, and nothing is committed while the next offset to commit is not
acknowledged. A record dropped around a rebalance is not always read again: on a partition
the worker kept, the fetcher's read position can pass it (in CI and locally about one rebalance
in three left one record unacknowledged at the committed offset of ``cvr-deltas``, every later
one acknowledged). So a partition whose next offset stays unacknowledged for
``STALL_RESEEK_S`` while later ones are is sought back to its committed offset: the record is
read again, and the ones after it again too (the worker's outputs are idempotent); an offset
that holds no record (a transaction marker) is then seen as a fetch gap.

This overrides private methods of faust-streaming, pinned in pyproject.toml;
tests/test_faust_commit.py shows Faust's answers and these side by side, and the SIGKILL and
rebalance tests in tests/test_streams_worker.py exercise it on a real broker.
"""

from __future__ import annotations

import asyncio
import logging
import time

from faust.transport import producer as faust_producer
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from faust.utils.functional import consecutive_numbers

from streams import metrics

#: How long a partition's next offset may stay unacknowledged while later offsets are
#: acknowledged before the partition is read again from its committed offset. A record in
#: flight is acknowledged in order with the ones after it, so a hole this old is a lost one.
STALL_RESEEK_S = 15.0

log = logging.getLogger(__name__)


class Consumer(driver.Consumer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: partition -> (committed offset, monotonic time) since its next offset is missing
        self._stalled: dict[TP, tuple[int, float]] = {}

    def stalled_partitions(self, now: float) -> dict[TP, int]:
        """Partitions held longer than ``STALL_RESEEK_S``, with the offset to read from."""
        return {
            tp: offset
            for tp, (offset, since) in self._stalled.items()
            if now - since >= STALL_RESEEK_S
        }

    async def commit(self, *args, **kwargs) -> bool:
        did_commit = await super().commit(*args, **kwargs)
        if self.flow_active:
            assigned = self.assignment()
            for tp, offset in self.stalled_partitions(time.monotonic()).items():
                del self._stalled[tp]
                if tp in assigned:
                    log.warning(
                        "offset %d of %s was never acknowledged: reading again from it", offset, tp
                    )
                    metrics.RESEEKS.labels(tp.topic).inc()
                    await self.seek(tp, offset)
                    # Faust records a fetch gap when a record comes more than one past the
                    # last one read: marking the one before as read lets it see an offset that
                    # holds no record (a transaction marker) as a gap instead of a hole again.
                    # (Faust cannot tell that before offset 2.)
                    self._read_offset[tp] = offset - 1 if offset > 1 else None
        return did_commit

    async def on_partitions_revoked(self, revoked) -> None:
        for tp in revoked:
            self._stalled.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # Faust passes the offset of the record that arrived after the gap as ``offset_to``
        await super()._add_gap(tp, offset_from, offset_to - 1)

    def _new_offset(self, tp: TP) -> int | None:
        offset = self._next_commit(tp)
        committed = self._committed_offset[tp]
        if offset is None and self._acked[tp] and committed is not None:
            if self._stalled.get(tp, (None,))[0] != committed:
                self._stalled[tp] = (committed, time.monotonic())
        else:
            self._stalled.pop(tp, None)
        return offset

    def _next_commit(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        if not acked:
            return None
        gaps = self._gap[tp]
        if gaps:  # offsets the fetcher saw skipped (compaction, transaction markers)
            for interval in gaps.overlap(0, max(acked)):
                acked.extend(range(interval.begin, interval.end))
            gaps.chop(0, max(acked) + 1)
        committed = self._committed_offset[tp]
        if committed is not None:  # acknowledged again while their commit was in flight
            done = {o for o in acked if o < committed}
            self._acked_index[tp].difference_update(done)
        acked[:] = sorted({o for o in acked if committed is None or o >= committed})
        if not acked or (committed is not None and acked[0] > committed):
            return None  # the next offset is in flight, or will be read again
        run = next(consecutive_numbers(acked))
        del acked[: len(run)]
        self._acked_index[tp].difference_update(run)
        return run[-1] + 1


class ProducerBuffer(faust_producer.ProducerBuffer):
    """Faust's buffer of ``send_soon`` messages, with a flush that returns only once every
    message put before it has been handed to aiokafka (Faust's returns after 0.1 s without a
    hand-over). Counts hand-overs, not the queue's size: the draining task takes a message off
    the queue before handing it over."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.put_count = 0  #: messages put so far
        self.sent_count = 0  #: messages handed to aiokafka so far, in the order they were put

    def put(self, fut) -> None:
        self.put_count += 1
        super().put(fut)

    async def _send_pending(self, fut) -> None:
        await super()._send_pending(fut)
        self.sent_count += 1

    async def flush(self) -> None:
        target = self.put_count
        while self.sent_count < target and not self.should_stop:
            self.message_sent.clear()
            try:
                await asyncio.wait_for(self.message_sent.wait(), timeout=1.0)
            except TimeoutError:
                log.warning("flush: %d messages still buffered", target - self.sent_count)
        await super().flush()  # at a stop: Faust's own (it refuses what it cannot send)


class Producer(driver.Producer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        assert not self.app.conf.producer_threaded  # the threaded producer has its own queue
        self.buffer = ProducerBuffer(loop=self.loop, beacon=self.beacon)
        self.buffer.app = self.app


class Transport(driver.Transport):
    Consumer = Consumer
    Producer = Producer
