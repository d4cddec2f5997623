"""The attribution step (streams.attributor) and the recovery (streams.recovery) on dict tables,
with no broker: records of many events each, applied in takes, committed every few takes, and a
crash at any take that delivered any prefix of the later writes and labels. The labels after the
restart equal those of a run that never crashed."""

from __future__ import annotations

import random

import orjson
import pytest

from streams.attributor import Attributor
from streams.recovery import recover
from streams.step import Step
from tests.test_streams_logic import RULES, simulate

TOPICS = {"clicks": "t.clicks", "conversions": "t.conversions"}


def records_of(rng: random.Random, events: list) -> list[tuple[str, int, bytes]]:
    """(stream, offset, value) records of one partition: each stream's events in their order,
    1-8 a record, the two streams' records interleaved at random."""
    by_stream = {"clicks": [], "conversions": []}
    for stream, event in events:
        event = event if stream == "clicks" else event | {"setup_id": "s"}
        by_stream[stream].append(orjson.dumps(event))
    chunks = {}
    for stream, lines in by_stream.items():
        cuts, at = [], 0
        while at < len(lines):
            n = rng.randint(1, 8)
            cuts.append(b"\n".join(lines[at : at + n]))
            at += n
        chunks[stream] = [(stream, offset, value) for offset, value in enumerate(cuts)]
    records = []
    while chunks["clicks"] or chunks["conversions"]:
        streams = [s for s in chunks if chunks[s]]
        records.append(chunks[rng.choice(streams)].pop(0))
    return records


def write(table: dict, writes) -> None:
    """A step's (key, value or None to delete) writes, as a table applies them."""
    for key, value in writes:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value


class Partition:
    """One partition's worker loop on dict tables, keeping what each take wrote and sent."""

    def __init__(self, records: list, rng: random.Random):
        self.records, self.rng = records, rng
        self.states, self.marks = {}, {}
        self.committed = {"clicks": 0, "conversions": 0}  #: the next offset to read
        self.log = []  #: per take: (state writes, watermark writes, labels sent)
        self.attributor = Attributor(RULES)

    def take(self, batch: list, step: Step | None = None) -> None:
        step = step or Step(self.states.get)
        for stream, offset, value in batch:
            applied, dead = self.attributor.record(
                step, stream, 0, offset, value, None, lambda kind, p: self.committed[kind]
            )
            assert not dead
        writes = [(key, value) for key, value, _ in step.writes()]
        marks = [self.attributor.watermarks[p].saved() for p in step.watermarks]
        write(self.states, writes)
        write(self.marks, [("0", saved) for saved in marks])
        self.log.append((writes, marks, [dict(e) for e in step.labels.get(0, [])]))

    def run(self, records: list, crash_after: int | None = None) -> int | None:
        """Take the records a few at a time, committing every few takes; stop after take
        ``crash_after``. Return the take of the last commit."""
        at, takes, last_commit = 0, 0, None
        while at < len(records):
            n = self.rng.randint(1, 4)
            self.take(records[at : at + n])
            at, takes = at + n, takes + 1
            if self.rng.random() < 0.3:  # a commit: what the takes sent is delivered first
                for stream, offset, _ in records[:at]:
                    self.committed[stream] = max(self.committed[stream], offset + 1)
                last_commit = len(self.log) - 1
            if crash_after is not None and takes > crash_after:
                return last_commit
        return last_commit


def labels_sent(log) -> dict[str, int]:
    labels = {}
    for _, _, examples in log:
        for example in examples:
            assert labels.setdefault(example["click_id"], example["label"]) == example["label"]
    return labels


def crash_and_resume(seed: int) -> tuple[dict, dict]:
    """The labels of an uninterrupted run, and of a run that crashed and resumed."""
    rng = random.Random(seed)
    events, _ = simulate(rng, rng.randint(20, 80), jitter=RULES.allowed_lateness_ms)
    records = records_of(rng, events)
    whole = Partition(records, random.Random(seed))
    whole.run(records)
    crashed = Partition(records, random.Random(seed))
    last_commit = crashed.run(records, crash_after=rng.randint(0, len(records) // 2))
    first_lost = 0 if last_commit is None else last_commit + 1
    # After the last commit each topic's writes are delivered up to a take of its own.
    states_to, marks_to, labels_to = (rng.randint(first_lost, len(crashed.log)) for _ in range(3))
    states, marks = {}, {}
    for writes, _, _ in crashed.log[:states_to]:
        write(states, writes)
    for _, saved, _ in crashed.log[:marks_to]:
        write(marks, [("0", s) for s in saved])
    delivered = crashed.log[:labels_to]
    # A new process: tables as delivered, reading from the committed offsets.
    resumed = Partition(records, random.Random(seed + 1))
    resumed.states, resumed.marks, resumed.committed = states, marks, dict(crashed.committed)
    committed = {(TOPICS[kind], 0): offset for kind, offset in crashed.committed.items()}
    step = Step(resumed.states.get)
    resumed.attributor.restore(
        recover(states.items(), marks.items(), committed, TOPICS, {}, RULES), step
    )
    rest = [r for r in records if r[1] >= crashed.committed[r[0]]]
    resumed.take([], step)  # what the restore resends
    resumed.run(rest)
    return labels_sent(whole.log), labels_sent(delivered + resumed.log)


@pytest.mark.parametrize("seed", range(200))
def test_a_crash_at_any_take_with_any_delivered_prefix_changes_no_label(seed):
    whole, resumed = crash_and_resume(seed)
    assert resumed == whole


def test_the_uninterrupted_run_labels_both_ways():
    labels = {}
    for seed in range(20):
        labels |= {f"{seed}:{c}": v for c, v in crash_and_resume(seed)[0].items()}
    assert 0 < sum(labels.values()) < len(labels)
