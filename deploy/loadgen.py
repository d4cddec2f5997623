"""A load generator for the demo: batches of candidates against a replica, with a record of
every request (time, latency, status, model version) for the report."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np


class LoadGenerator(threading.Thread):
    def __init__(self, url: str, candidates: list[dict], batch: int = 100, rate_hz: float = 20):
        super().__init__(name="loadgen", daemon=True)
        self.url, self.candidates, self.batch, self.rate_hz = url, candidates, batch, rate_hz
        self.records: list[tuple[float, float, int, int | None]] = []  # t, ms, status, version
        self.stop_event = threading.Event()
        self.rng = np.random.default_rng(0)

    def run(self) -> None:
        while not self.stop_event.is_set():
            picks = self.rng.integers(0, len(self.candidates), self.batch)
            body = json.dumps({"candidates": [self.candidates[i] for i in picks]}).encode()
            request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
            started = time.time()
            try:
                with urllib.request.urlopen(request, timeout=10) as r:
                    status, version = r.status, json.loads(r.read())["model_version"]
            except urllib.error.HTTPError as error:
                status, version = error.code, None
            except (urllib.error.URLError, OSError):
                status, version = 599, None
            elapsed = time.time() - started
            self.records.append((started, elapsed * 1000, status, version))
            self.stop_event.wait(max(1 / self.rate_hz - elapsed, 0))

    def summary(self, last_s: float | None = None) -> dict:
        records = self.records
        if last_s is not None:
            cutoff = time.time() - last_s
            records = [r for r in records if r[0] >= cutoff]
        ok = [r for r in records if r[2] == 200]
        latency = [r[1] for r in ok]
        return {
            "requests": len(records),
            "failed": sum(r[2] != 200 for r in records),
            "p99_ms": float(np.percentile(latency, 99)) if latency else None,
            "versions": sorted({r[3] for r in ok}),
        }
