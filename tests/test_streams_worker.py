"""The stream worker on the real broker: labels and CVR state equal a batch recomputation from
the same event log, with malformed events dead-lettered, through SIGKILLs and a rebalance.
Events travel many a record (one a line), as producers send them by default; one test sends one
event a record, which stays valid."""

from __future__ import annotations

import signal
import time
import urllib.request
from collections import Counter

import pytest
from kafka import KafkaProducer

from rarecvr import kafka_auth
from rarecvr.topics import CVR_DELTAS
from tests.streams_harness import (
    assert_matches_batch,
    dead_letters,
    group_progress,
    send,
    wait_caught_up,
)


def test_labels_and_cvr_equal_batch_and_malformed_lines_are_dead_lettered(stack, report):
    bootstrap, workers, group = stack
    sent = send(bootstrap, 20_000, duplicate=0.02, malformed=0.5)  # malformed lines in records
    malformed = sum(n for (_, fault), n in sent.items() if fault and fault.startswith("malformed"))
    assert malformed >= 10_000
    workers.start("w1")
    wait_caught_up(bootstrap, group, workers)
    truth = assert_matches_batch(bootstrap, workers, "w1")
    letters = dead_letters(bootstrap)
    assert len(letters) == malformed
    reasons = Counter(letter["reason"] for letter in letters)
    assert set(reasons) == {"click.<event>", "click.event_id", "click.ts_ms", "click.setup_id"}
    assert all(letter["raw_b64"] and letter["detail"] for letter in letters)
    assert any(letter["line"] > 0 for letter in letters), "the malformed were lines of records"
    with urllib.request.urlopen(f"http://127.0.0.1:{workers.ports['w1']}/metrics") as r:
        text = r.read().decode()
    assert 'rarecvr_stream_outcomes_total{outcome="duplicate_click"}' in text
    report(f"streams: {len(truth)} labels equal batch; {malformed} malformed dead-lettered")


#: records on the internal deltas topic that no worker writes: not JSON, not an object, a
#: setup id that is not a string, a delta of the wrong type, a tombstone
POISONED_DELTAS = [
    b"not json",
    b"[1, 2]",
    b'{"v": 2, "setup_id": 5, "deltas": []}',
    b'{"v": 2, "setup_id": "s1", "deltas": [{"kind": "click", "ts_ms": "soon"}]}',
    None,
]


def test_poisoned_cvr_deltas_are_dead_lettered_and_the_count_agent_goes_on(stack, report):
    bootstrap, workers, group = stack
    producer = KafkaProducer(**kafka_auth.kafka_python(bootstrap))
    for value in POISONED_DELTAS:
        producer.send(CVR_DELTAS.name, key=b"s1", value=value, partition=0)
    producer.close()
    send(bootstrap, 5_000, batch=1)  # one event a record
    workers.start("w1")
    wait_caught_up(bootstrap, group, workers)
    truth = assert_matches_batch(bootstrap, workers, "w1")  # the CVR state too
    letters = [letter for letter in dead_letters(bootstrap) if letter["topic"] == CVR_DELTAS.name]
    assert len(letters) == len(POISONED_DELTAS)
    assert {letter["reason"] for letter in letters} == {"cvr_delta.<event>"}
    assert all("unreadable" in letter["detail"] for letter in letters)
    report(f"streams: {len(letters)} poisoned CVR deltas dead-lettered, {len(truth)} labels after")


@pytest.mark.timeout(600)
def test_three_sigkills_lose_and_double_count_nothing(stack, report):
    bootstrap, workers, group = stack
    send(bootstrap, 30_000, batch=20, duplicate=0.01)  # small records: kills fall mid-stream
    kills = 0
    workers.start("w1")
    _, end = group_progress(bootstrap, group)
    floor = 0  # committed offsets at the last restart: kill only after it has committed more
    since = time.monotonic()
    while kills < 3:
        done, _ = group_progress(bootstrap, group)
        # or, once the stream is all committed, when the restarted worker has had time to open
        # its tables (a worker killed before that has nothing to restore)
        settled = done >= end and time.monotonic() - since > 20
        if done > (kills + 1) * end / 5 and (done > floor or settled):
            workers.kill("w1", signal.SIGKILL)
            kills += 1
            floor, since = group_progress(bootstrap, group)[0], time.monotonic()
            workers.start("w1")
        assert workers.procs["w1"].poll() is None, workers.log("w1")
        time.sleep(0.2)
    wait_caught_up(bootstrap, group, workers, timeout=300)
    truth = assert_matches_batch(bootstrap, workers, "w1")
    assert workers.log("w1", tail=None).count("restored from their changelogs") == kills
    report(f"streams: {kills} SIGKILLs, {len(truth)} labels and CVR state equal batch")


@pytest.mark.timeout(600)
def test_a_worker_leaving_hands_its_partitions_over_without_loss(stack, report):
    bootstrap, workers, group = stack
    send(bootstrap, 20_000)
    workers.start("w1")
    workers.start("w2")
    _, end = group_progress(bootstrap, group)
    deadline = time.monotonic() + 120
    while group_progress(bootstrap, group)[0] < end / 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    workers.kill("w2", signal.SIGTERM)
    wait_caught_up(bootstrap, group, workers, timeout=300)
    truth = assert_matches_batch(bootstrap, workers, "w1")
    report(f"streams: rebalance after a worker left, {len(truth)} labels equal batch")
