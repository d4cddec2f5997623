"""The labeled-examples topic, read and parsed in a thread of its own so that reading overlaps
training.

The thread runs an aiokafka consumer (its record decoding is compiled: about 4 us a record here,
against about 70 for kafka-python's) over every partition from the given offsets, turns each
partition's records of a fetch into one block of columns with ``parse`` (which leaves out dead
letters), and hands each block over as soon as it is parsed, in a ``Batch`` through a bounded
queue: when training falls behind, reading waits. (A fetch holds up to 16 MiB a partition, about
35,000 examples; handing over the fetch's blocks together made the window's first chunk wait
for every partition's parse, about a second.) A batch without a block says the consumer is
idle, with the partitions that have nothing more to read. Offsets are committed from the thread
too (a consumer belongs to one thread), when the trainer asks.

The thread can run at a lower CPU priority than training (``nice``; the trainer's default is
10): training is the slow part and reading only has to stay a fetch or two ahead of it, so on
a machine whose cores training fills, the reader should take what training leaves rather than
preempt it (on 2 cores, windows were faster in 7 of 9 side-by-side pairs, by 6.5% on average:
BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from rarecvr import kafka_auth
from rarecvr.liveness import Heartbeat
from trainer.examples import Examples


@dataclass(frozen=True)
class Batch:
    #: (partition, offsets, examples): a partition's valid records of a fetch, in order; None
    #: when the consumer is idle or read only dead letters
    block: tuple[int, np.ndarray, Examples] | None
    positions: dict[int, int]  #: each partition's next offset to read, after this batch
    caught_up: set[int] = field(default_factory=set)  #: when idle: partitions at their end


log = logging.getLogger(__name__)


class ExampleFeed:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: list[int],
        group: str,
        start: dict[int, int | None],
        parse: Callable[[list], tuple[Examples, np.ndarray]],
        max_batches: int = 16,
        nice: int = 0,
    ):
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.nice = nice
        self.partitions, self.start_offsets, self.parse = partitions, start, parse
        self.batches: queue.Queue[Batch] = queue.Queue(max_batches)
        self._commits: queue.Queue[dict[int, int]] = queue.Queue()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        #: a success: a fetch answered; a failure (the broker away) is retried from the
        #: positions already handed over, so nothing is read twice or skipped
        self.heartbeat = Heartbeat("example-feed", stale_after_s=300.0)
        self._thread = threading.Thread(target=self._run, name="example-feed", daemon=True)

    def start(self) -> ExampleFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def get(self, timeout: float) -> Batch | None:
        """The next batch, or None after ``timeout``; raises what stopped the thread."""
        try:
            return self.batches.get(timeout=timeout)
        except queue.Empty:
            if self._error is not None:
                raise RuntimeError("the example feed stopped") from self._error
            return None

    def commit(self, offsets: dict[int, int]) -> None:
        """Commit these next offsets (for lag monitoring) at the thread's next turn."""
        self._commits.put(offsets)

    def _run(self) -> None:
        try:
            lower_priority(self.nice)
            while not self._stop.is_set():
                try:
                    asyncio.run(self._read())
                except Exception as error:  # noqa: BLE001 - the feed outlives a broker away
                    self.heartbeat.failed(error)
                    log.warning("the example feed failed (%s); reading again in 2 s", error)
                    self._stop.wait(2)
        except BaseException as error:  # noqa: BLE001 - reported to the trainer by get()
            self._error = error

    async def _read(self) -> None:
        consumer = AIOKafkaConsumer(
            **kafka_auth.aiokafka(self.bootstrap),
            group_id=self.group,
            enable_auto_commit=False,
            fetch_max_bytes=64 << 20,
            max_partition_fetch_bytes=16 << 20,
        )
        parts = {p: TopicPartition(self.topic, p) for p in self.partitions}
        await consumer.start()
        try:
            consumer.assign(list(parts.values()))
            for p, tp in parts.items():
                if self.start_offsets.get(p) is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, self.start_offsets[p])
            positions = {p: await consumer.position(tp) for p, tp in parts.items()}
            while not self._stop.is_set():
                await self._commit(consumer, parts)
                got = await consumer.getmany(timeout_ms=500, max_records=20_000)
                if got:
                    self.heartbeat.beat()
                handed = False
                for tp, records in sorted(got.items(), key=lambda kv: kv[0].partition):
                    examples, offsets = self.parse(records)
                    positions[tp.partition] = records[-1].offset + 1
                    if len(examples):  # handed over at once: training starts sooner
                        block = (tp.partition, offsets, examples)
                        await self._put(consumer, parts, Batch(block, dict(positions)))
                        handed = True
                if not got:
                    ends = await consumer.end_offsets(list(parts.values()))
                    self.heartbeat.beat()  # an empty fetch says nothing of a broker away
                    caught_up = {p for p, tp in parts.items() if positions[p] >= ends[tp]}
                    await self._put(consumer, parts, Batch(None, dict(positions), caught_up))
                elif not handed:  # only dead letters: the positions still move on
                    await self._put(consumer, parts, Batch(None, dict(positions)))
        finally:
            await self._commit(consumer, parts)
            await consumer.stop()

    async def _put(self, consumer: AIOKafkaConsumer, parts: dict, batch: Batch) -> None:
        """Queue a batch, committing what the trainer asks while the queue is full; a read
        started again starts where the last batch handed over ends."""
        while not self._stop.is_set():
            try:
                self.batches.put(batch, timeout=0.2)
                self.start_offsets = dict(batch.positions)
                return
            except queue.Full:
                await self._commit(consumer, parts)

    async def _commit(self, consumer: AIOKafkaConsumer, parts: dict) -> None:
        while not self._commits.empty():
            offsets = self._commits.get()
            await consumer.commit({parts[p]: o for p, o in offsets.items()})


def lower_priority(nice: int) -> None:
    """Raise the calling thread's nice value by ``nice`` (Linux: a thread is a task of its own,
    so the rest of the process keeps its priority); a no-op where that is not possible.

    >>> import threading
    >>> seen = []
    >>> def reader():
    ...     lower_priority(5)
    ...     seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    >>> before = os.getpriority(os.PRIO_PROCESS, 0)
    >>> thread = threading.Thread(target=reader); thread.start(); thread.join()
    >>> seen == [min(before + 5, 19)], os.getpriority(os.PRIO_PROCESS, 0) == before
    (True, True)
    """
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + nice, 19))
