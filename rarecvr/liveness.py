"""Whether a background thread is doing its job: up, and a recent success.

A supervised thread (it catches, logs, backs off and starts again) can still be failing for
good, or stuck; a heartbeat says which, in Prometheus and in a process's ``/readyz``. A thread
calls ``beat()`` after work that proves it is connected (a broker answered, the registry was
read) and ``failed(error)`` when it catches one.

>>> beat = Heartbeat("doctest-reader", stale_after_s=60)
>>> beat.healthy, beat.status()["error"]
(False, 'not started')
>>> beat.beat(); beat.healthy
True
>>> beat.failed(ConnectionError("broker away")); beat.healthy, beat.status()["error"]
(True, 'ConnectionError: broker away')
>>> Heartbeat("doctest-stuck", stale_after_s=0).healthy  # never a success
False
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge

UP = Gauge(
    "rarecvr_thread_up",
    "1 while a background thread works, 0 after a failure until its next success.",
    ["thread"],
)
LAST_SUCCESS = Gauge(
    "rarecvr_thread_last_success_timestamp_seconds",
    "When a background thread last proved it works (a broker answered, the registry was read).",
    ["thread"],
)
FAILURES = Counter(
    "rarecvr_thread_failures_total",
    "Failures a background thread caught and recovered from, since the process started.",
    ["thread"],
)


class Heartbeat:
    def __init__(self, thread: str, stale_after_s: float):
        self.thread, self.stale_after_s = thread, stale_after_s
        self.at: float | None = None  #: monotonic time of the last success
        self.error: str | None = "not started"
        self.failures = 0
        UP.labels(thread).set(0)

    def beat(self) -> None:
        self.at, self.error = time.monotonic(), None
        UP.labels(self.thread).set(1)
        LAST_SUCCESS.labels(self.thread).set(time.time())

    def failed(self, error: BaseException) -> None:
        self.error = f"{type(error).__name__}: {error}"
        self.failures += 1
        UP.labels(self.thread).set(0)
        FAILURES.labels(self.thread).inc()

    @property
    def age_s(self) -> float | None:
        return None if self.at is None else time.monotonic() - self.at

    @property
    def healthy(self) -> bool:
        """A success within ``stale_after_s``: a thread that fails now and then (a broker
        restart) stays healthy, one that keeps failing or hangs does not."""
        age = self.age_s
        return age is not None and age <= self.stale_after_s

    def status(self) -> dict:
        age = self.age_s
        return {
            "healthy": self.healthy,
            "last_success_s_ago": None if age is None else round(age, 1),
            "stale_after_s": self.stale_after_s,
            "failures": self.failures,
            "error": self.error,
        }
