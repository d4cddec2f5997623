"""Faust's Kafka transport with one fix: offsets acknowledged twice do not stall commits.

Faust commits, per partition, the end of the first run of consecutive acknowledged offsets
(``Consumer._new_offset``). When the same offset is acknowledged twice (after a restart the
fetcher can hand a stream the same records again, and between computing a commit and
finishing it an offset is in neither the acknowledged index nor below the committed offset),
the sorted list holds it twice, every duplicate ends a run, and each commit advances only to
the next duplicate: one record a commit interval. A worker restarted after a SIGKILL took
minutes to commit what it had already processed (robinhood/faust#625 and #559 describe the
same state). The fix removes duplicates before Faust looks for the run.

This overrides a private method of faust-streaming, pinned in pyproject.toml; the SIGKILL
tests in tests/test_streams_worker.py exercise it on a real broker.
(tests/test_faust_commit.py shows Faust's answer and this one side by side.)
"""

from __future__ import annotations

from faust.transport.drivers import aiokafka as driver
from faust.types import TP


class Consumer(driver.Consumer):
    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        if len(acked) > 1:
            acked[:] = sorted(set(acked))
        return super()._new_offset(tp)


class Transport(driver.Transport):
    Consumer = Consumer
