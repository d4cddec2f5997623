"""The stabilizer in the stream worker, on the real broker: a drifting simulated stream yields
task assignments on the compacted topic, and a fresh reader rebuilds the worker's view."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from urllib.parse import quote

import pytest

from rarecvr.produce import produce
from rarecvr.topics import TASK_ASSIGNMENTS
from simulator import Marketplace, SimConfig
from simulator.events import event_stream
from stabilizer.reader import AssignmentReader
from tests.streams_harness import Workers, read_topic, wait_caught_up


def worker_view(workers: Workers, name: str) -> dict:
    url = f"http://127.0.0.1:{workers.ports[name]}/assignments?limit=2"
    view, after = {}, ""
    while after is not None:  # page by page, two at a time
        with urllib.request.urlopen(f"{url}&after={quote(after)}", timeout=10) as r:
            page = json.loads(r.read())
        assert len(page["assignments"]) <= 2
        view |= page["assignments"]
        after = page["next"]
    return view


def reader_view(bootstrap: str) -> dict:
    reader = AssignmentReader(bootstrap).start()
    try:
        assert reader.wait_ready(timeout=60)
        time.sleep(1)  # a record sent just before the end offsets were read
        return reader.snapshot()
    finally:
        reader.stop()


@pytest.mark.timeout(600)
def test_assignments_reach_the_topic_and_a_fresh_reader_rebuilds_the_workers_view(stack, report):
    bootstrap, workers, group = stack
    cfg = SimConfig(clicks=30_000, advertisers=40, days=6.0, seed=11, drift_share=0.5)
    produce(bootstrap, event_stream(Marketplace(cfg)))
    workers.start("w1", "--dwell-hours", "12", "--confidence", "0.8")
    wait_caught_up(bootstrap, group, workers)
    time.sleep(2)
    view = worker_view(workers, "w1")
    records = [json.loads(r.value) for r in read_topic(bootstrap, TASK_ASSIGNMENTS)]
    assert len(view) >= 0.9 * Marketplace(cfg).n_setups  # every setup with clicks
    assert {a["task"] for a in view.values()} == {"hard", "soft"}
    assert any(a["epoch"] > 1 for a in view.values()), "no setup changed task over 6 days"
    assert reader_view(bootstrap) == view
    assert len(records) == sum(a["epoch"] for a in view.values())  # only changes are written

    workers.kill("w1", signal.SIGKILL)
    workers.start("w1", "--dwell-hours", "12", "--confidence", "0.8")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if worker_view(workers, "w1") == view:
                break
        except OSError:
            pass
        time.sleep(1)
    assert worker_view(workers, "w1") == view
    assert reader_view(bootstrap) == view  # the restart sent no new epoch
    flips = sum(a["epoch"] - 1 for a in view.values())
    report(f"stabilizer: {len(view)} setups assigned, {flips} changes, reader view equals worker")
