"""Follow the compacted task-assignments topic from any process (trainer, replica, test).

A background thread reads the topic from the beginning with kafka-python (no consumer group:
every reader wants every record) into an :class:`~stabilizer.view.AssignmentView`. ``ready``
turns true once the reader has reached the end offsets it found at start.

    reader = AssignmentReader(bootstrap).start()
    reader.wait_ready(timeout=30)
    task, epoch = reader.view.task(setup_id, group)
"""

from __future__ import annotations

import logging
import threading

import numpy as np
from kafka import KafkaConsumer, TopicPartition

from rarecvr import kafka_auth
from rarecvr.contracts import ContractError, TaskAssignment, decode
from rarecvr.liveness import Heartbeat
from rarecvr.malformed import skipped
from rarecvr.topics import TASK_ASSIGNMENTS
from stabilizer.policy import PolicyParams
from stabilizer.view import AssignmentView

log = logging.getLogger(__name__)

CHECK_S = 5.0  #: how often the reader asks the broker for the topic's end
CHECK_TIMEOUT_MS = 10_000


class AssignmentReader:
    """A thread keeping ``view`` up to date with the task-assignments topic."""

    def __init__(
        self,
        bootstrap: str,
        params: PolicyParams | None = None,
        topic: str | None = None,
        stale_after_s: float = 300.0,
    ):
        self.bootstrap = bootstrap
        self.topic = topic or TASK_ASSIGNMENTS.name
        self.view = AssignmentView(params, settled=True)
        self.lock = threading.Lock()
        #: a success: the broker told the topic's end offsets (checked every ``CHECK_S``)
        self.heartbeat = Heartbeat("assignment-reader", stale_after_s)
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="assignment-reader", daemon=True)

    def start(self) -> AssignmentReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def task(self, setup_id: str, group: str | None = None) -> tuple[str, int]:
        with self.lock:
            return self.view.task(setup_id, group)

    def judged(self, setup_id: str) -> str | None:
        with self.lock:
            return self.view.judged(setup_id)

    def hard_as_of(self, setup_id: str, ts_ms: np.ndarray, group: str | None = None) -> np.ndarray:
        with self.lock:
            return self.view.hard_as_of(setup_id, ts_ms, group)

    def snapshot(self) -> dict[str, dict]:
        with self.lock:
            return self.view.snapshot()

    def _run(self) -> None:
        """Follow the topic until stopped; a failure (the broker not up yet, a lost connection)
        is logged and the topic read again from the start (the view keeps the highest epoch of
        each setup, so a record applied twice changes nothing)."""
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as error:  # noqa: BLE001 - the reader must outlive any failure
                self.heartbeat.failed(error)
                log.warning("assignment reader failed (%s); reading again in 2 s", error)
                self._stop.wait(2)

    def _follow(self) -> None:
        consumer = KafkaConsumer(
            **kafka_auth.kafka_python(self.bootstrap), group_id=None, enable_auto_commit=False
        )
        try:
            parts = [
                TopicPartition(self.topic, p)
                for p in sorted(consumer.partitions_for_topic(self.topic) or {0})
            ]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            ends = consumer.end_offsets(parts, timeout_ms=CHECK_TIMEOUT_MS)
            self.heartbeat.beat()
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=200)
                with self.lock:
                    for records in batches.values():
                        for record in records:
                            self._apply(record.value)
                    self.view.settle()  # cold starts worked out here, not on a request
                if not self.ready and all(consumer.position(tp) >= ends[tp] for tp in parts):
                    self._ready.set()
                if self.heartbeat.age_s > CHECK_S:  # a poll says nothing of a broker away
                    consumer.end_offsets(parts, timeout_ms=CHECK_TIMEOUT_MS)
                    self.heartbeat.beat()
        finally:
            consumer.close()

    def _apply(self, value: bytes) -> None:
        try:
            self.view.apply(decode(TaskAssignment, value))
        except ContractError as error:
            skipped(self.topic, error)
