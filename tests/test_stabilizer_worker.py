"""The stabilizer in the stream worker, on the real broker: a drifting simulated stream yields
task assignments on the compacted topic, and a fresh reader rebuilds the worker's view; a history
log seeds each setup's CVR, so its first task comes from its own past clicks."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rarecvr.produce import produce
from rarecvr.topics import TASK_ASSIGNMENTS
from simulator import Marketplace, SimConfig
from simulator.events import event_stream
from simulator.tables import Vocab, clicks_table
from simulator.traffic import generate
from stabilizer.reader import AssignmentReader
from tests.streams_harness import (
    WINDOW_MS,
    Workers,
    batch_truth,
    read_topic,
    send,
    wait_caught_up,
)


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


def settles(read, expected, timeout: float = 120) -> bool:
    """Whether ``read()`` comes to equal ``expected`` within ``timeout`` (a restarted worker
    answers 503 while it restores its tables)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if read() == expected:
                return True
        except OSError:
            pass
        time.sleep(1)
    return False


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
    assert settles(lambda: worker_view(workers, "w1"), view)
    assert reader_view(bootstrap) == view  # the restart sent no new epoch
    flips = sum(a["epoch"] - 1 for a in view.values())
    report(f"stabilizer: {len(view)} setups assigned, {flips} changes, reader view equals worker")


def history_times(table: pa.Table) -> dict[str, dict]:
    """Per setup, the log's click times and its conversions' times within the window."""
    times: dict[str, dict] = {}
    setups = table["setup_id"].to_pylist()
    clicks = table["ts_ms"].to_numpy()
    converted = table["conversion_ts_ms"].to_numpy(zero_copy_only=False).astype(float)
    for setup, click, conversion in zip(setups, clicks, converted, strict=True):
        entry = times.setdefault(setup, {"clicks": [], "conversions": []})
        entry["clicks"].append(int(click))
        if np.isfinite(conversion) and 0 <= conversion - click <= WINDOW_MS:
            entry["conversions"].append(int(conversion))
    return times


def cvr_page(workers: Workers, name: str, setup: str) -> dict:
    url = f"http://127.0.0.1:{workers.ports[name]}/cvr/{setup}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.timeout(600)
def test_a_history_log_seeds_each_setups_cvr_and_its_first_task_once(stack, tmp_path, report):
    bootstrap, workers, group = stack
    market = Marketplace(SimConfig(clicks=20_000, advertisers=60, days=3.0, seed=5))
    table = pa.concat_tables([clicks_table(chunk, Vocab(market)) for chunk in generate(market)])
    pq.write_table(table, tmp_path / "history.parquet")
    send(bootstrap, 3000)  # live events of the same setups, in the same days
    seeded = ("--history", str(tmp_path / "history.parquet"))
    workers.start("w1", *seeded)
    wait_caught_up(bootstrap, group, workers)
    time.sleep(2)
    _, truth = batch_truth(bootstrap, history_times(table))
    setups = sorted(truth)[:25]
    before = {setup: cvr_page(workers, "w1", setup) for setup in setups}
    for setup in setups:  # history and live in one state: the seed used the live partition
        # history clicks travel at their bucket's start, and the page reads the sums at the
        # latest time applied: both off by at most a bucket's decay (45 min of a 7-day half-life)
        for kind in ("clicks", "conversions"):
            assert before[setup][kind] == pytest.approx(truth[setup][kind], rel=5e-3, abs=1e-12)
    view = worker_view(workers, "w1")
    assert set(table["setup_id"].to_pylist()) <= set(view)
    assert {a["task"] for a in view.values()} == {"hard", "soft"}
    records = [json.loads(r.value) for r in read_topic(bootstrap, TASK_ASSIGNMENTS)]
    first = {r["setup_id"]: r for r in records if r["epoch"] == 1}
    assert first.keys() == view.keys()
    clicks = table.group_by("setup_id").aggregate([("ts_ms", "count")]).to_pylist()
    for row in clicks:  # the first task was decided on the whole history (mature by then)
        evidence = first[row["setup_id"]]["evidence"]["clicks"]
        assert 0.3 * row["ts_ms_count"] <= evidence <= row["ts_ms_count"], row

    workers.kill("w1", signal.SIGTERM)
    workers.start("w1", *seeded)  # the same log sent again changes nothing
    wait_caught_up(bootstrap, group, workers)
    assert settles(lambda: {setup: cvr_page(workers, "w1", setup) for setup in setups}, before)
    assert worker_view(workers, "w1") == view
    hard = sum(a["task"] == "hard" for a in view.values())
    report(
        f"stabilizer: a {table.num_rows}-click history seeded {len(view)} setups ({hard} hard), "
        "CVR equal to batch with the live events, unchanged when sent again"
    )
