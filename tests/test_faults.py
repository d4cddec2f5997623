"""The broker goes away and comes back while a worker, a replica, a trainer and the trainer's
example feed run: nothing is lost or read twice, the trainer trains every label once, and the
replica answers throughout.

The test has a broker of its own (stopping the session's would break the other tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from deploy.kafka import Broker, fetch
from deploy.kafka.broker import free_port
from rarecvr.contracts import split_lines
from rarecvr.produce import produce
from rarecvr.registry import Registry
from rarecvr.schema_topic import publish_schema
from rarecvr.topics import LABELED_EXAMPLES, ensure_topics
from simulator import Marketplace, SimConfig
from simulator.events import event_stream
from simulator.tables import SCHEMA
from tests.streams_harness import (
    WINDOW_MS,
    Workers,
    assert_matches_batch,
    environment,
    wait_caught_up,
)
from tests.test_serving import (
    CANDIDATES,
    post,
    readyz,
    start_replica,
    wait_for_readyz,
    write_version,
)
from tests.test_trainer import assert_windows_tile
from trainer.feed import ExampleFeed
from trainer.loop import TrainerState

OUTAGE_S = 25
STALE_S = 8


def click_ids(records: list) -> tuple[list[str], np.ndarray]:
    """The feed's parse for this test: the click id of every labeled example."""
    ids, offsets = [], []
    for record in records:
        for line in split_lines(record.value):
            ids.append(json.loads(line)["click_id"])
            offsets.append(record.offset)
    return ids, np.array(offsets, dtype=np.int64)


def trained(state_file) -> list[dict]:
    return TrainerState.load(state_file).history if state_file.exists() else []


def drain(feed: ExampleFeed, into: list[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = feed.get(timeout=0.5)
        if batch is not None and batch.block is not None:
            into.extend(batch.block[2])


@pytest.mark.timeout(900)
def test_a_broker_restart_loses_nothing_and_the_replica_answers_throughout(tmp_path, report):
    fetch()
    broker = Broker(tmp_path / "kafka", log_level="WARN")
    info = broker.start(timeout=90)
    bootstrap = info.bootstrap
    env = environment("rarecvr.")
    workers = Workers(bootstrap, tmp_path, env)
    serve = feed = trainer = None
    try:
        ensure_topics(bootstrap)
        publish_schema(bootstrap, SCHEMA, "simulator")
        events = list(
            event_stream(Marketplace(SimConfig(clicks=4_000, advertisers=40, days=2.0, seed=11)))
        )
        half = len(events) // 2
        produce(bootstrap, events[:half])
        workers.start("w1")
        registry = Registry(tmp_path / "registry", keep=5)
        write_version(registry, seed=1)
        port = free_port()
        serve = start_replica(
            bootstrap, registry, port, tmp_path / "serve.log", env, stale_s=STALE_S
        )
        state_file = tmp_path / "trainer" / "state.json"
        trainer_log = tmp_path / "train.log"
        with open(trainer_log, "wb") as out:
            trainer = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rarecvr.cli",
                    "train",
                    "--bootstrap",
                    bootstrap,
                    "--registry",
                    str(tmp_path / "trained"),
                    "--state-dir",
                    str(state_file.parent),
                    "--window-hours",
                    "6",
                    "--attribution-days",
                    str(WINDOW_MS / 86_400_000),
                    "--hash-buckets",
                    "2000",
                    "--close-idle-seconds",
                    "5",
                    "--metrics-port",
                    "0",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
            )
        feed = ExampleFeed(
            bootstrap,
            LABELED_EXAMPLES.name,
            list(range(LABELED_EXAMPLES.partitions)),
            "test-feed",
            dict.fromkeys(range(LABELED_EXAMPLES.partitions)),
            click_ids,
        ).start()
        wait_caught_up(bootstrap, "rarecvr.streams", workers)
        wait_for_readyz(port, 200, timeout=120)
        read: list[str] = []
        drain(feed, read, 5)
        before = len(read)

        broker.stop()
        statuses, deadline, unready = [], time.monotonic() + OUTAGE_S, None
        while time.monotonic() < deadline:
            statuses.append(post(port, {"candidates": CANDIDATES})[0])
            got, body = readyz(port)
            if got == 503:
                unready = body
            time.sleep(0.5)
        assert set(statuses) == {200}, f"scoring failed while the broker was away: {statuses}"
        assert unready and not unready["threads"]["assignment-reader"]["healthy"], unready

        broker.start(timeout=90)  # the same data and ports
        assert broker.info.bootstrap == bootstrap
        produce(bootstrap, events[half:])
        wait_caught_up(bootstrap, "rarecvr.streams", workers, timeout=300)
        truth = assert_matches_batch(bootstrap, workers, "w1")
        deadline = time.monotonic() + 120
        while len(read) < len(truth) and time.monotonic() < deadline:
            drain(feed, read, 5)
        assert len(read) == len(set(read)) == len(truth), "the feed lost or re-read examples"
        assert set(read) == set(truth)
        assert wait_for_readyz(port, 200, timeout=60)["threads"]["assignment-reader"]["healthy"]

        deadline = time.monotonic() + 300  # the trainer trains every label once, in order
        while sum(w["examples"] for w in trained(state_file)) < len(truth):
            assert trainer.poll() is None, trainer_log.read_text()[-3000:]
            assert time.monotonic() < deadline, trainer_log.read_text()[-3000:]
            time.sleep(1)
        windows = trained(state_file)
        assert sum(w["examples"] for w in windows) == len(truth), windows
        assert_windows_tile(windows)
        report(
            f"faults: broker away {OUTAGE_S} s; {len(statuses)} scores answered 200, "
            f"{len(truth)} labels equal batch ({before} read before), none read twice; "
            f"the trainer trained them once in {len(windows)} windows"
        )
    finally:
        if feed is not None:
            feed.stop()
        workers.stop_all()
        for proc in (trainer, serve):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=60)
        broker.stop()
