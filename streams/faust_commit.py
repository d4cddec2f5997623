"""Faust's Kafka transport with its commit offset made safe for the worker.

Faust commits, per partition, the end of the first run of consecutive acknowledged offsets
(``Consumer._new_offset``). Two of its rules failed the worker's SIGKILL test:

- **An offset acknowledged twice stalled commits.** After a restart the fetcher can hand a
  stream the same records again; the sorted list then holds an offset twice, every duplicate
  ends a run, and each commit advanced to the next duplicate only: one record a commit
  interval (robinhood/faust#625 and #559 describe the same state).
- **A one-offset hole at the head was committed over.** Faust waits while the first
  acknowledged offset is more than one past the committed offset, but commits over a hole of
  exactly one (faust-streaming/faust#606): a record still in flight, or one dropped when a
  rebalance suspended the flow, is then never read again. With commits no longer stalled by
  duplicates, that lost a click in CI.

Here duplicates are removed, offsets the fetcher saw skipped (Faust's gap intervals) count as
acknowledged as in Faust, and nothing is committed while the next offset to commit is not
acknowledged: a dropped record is read again after the rebalance seeks to the committed
offset. This overrides a private method of faust-streaming, pinned in pyproject.toml;
tests/test_faust_commit.py shows Faust's answers and these side by side, and the SIGKILL
tests in tests/test_streams_worker.py exercise it on a real broker.
"""

from __future__ import annotations

from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from faust.utils.functional import consecutive_numbers


class Consumer(driver.Consumer):
    def _new_offset(self, tp: TP) -> int | None:
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


class Transport(driver.Transport):
    Consumer = Consumer
