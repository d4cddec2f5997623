"""The attribution step (streams.attributor), the click store (streams.clickstore) and the
recovery (streams.recovery) on dict tables, with no broker: records of many events each, applied
in takes, committed every few takes, and a crash at any take that delivered any prefix of each
topic's later writes (the click states', the watermarks', the labels'). The labels after the
restart equal those of a run that never crashed."""

from __future__ import annotations

import random

import orjson
import pytest

from streams.attributor import Attributor
from streams.clickstore import ClickStore
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


TABLES = ("states", "marks")


class Partition:
    """One partition's worker loop on dict tables, keeping what each take wrote and sent."""

    def __init__(self, rng: random.Random, tables: dict | None = None):
        self.rng = rng
        self.tables = tables or {name: {} for name in TABLES}
        self.store = ClickStore(self.tables["states"])
        self.committed = {"clicks": 0, "conversions": 0}  #: the next offset to read
        self.log = []  #: per take: ({table: its writes}, labels sent)
        self.attributor = Attributor(RULES)

    def take(self, batch: list, step: Step | None = None) -> None:
        step = step or Step(self.store.get)
        for stream, offset, value in batch:
            applied, dead = self.attributor.record(
                step, stream, 0, offset, value, None, lambda kind, p: self.committed[kind]
            )
            assert not dead
        writes = {
            "states": [(key, value) for key, value, _ in self.store.write(step.writes())],
            "marks": [(str(p), self.attributor.watermarks[p].saved()) for p in step.watermarks],
        }
        for name, table_writes in writes.items():
            write(self.tables[name], table_writes)
        self.log.append((writes, [dict(e) for e in step.labels.get(0, [])]))

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


def write(table: dict, writes) -> None:
    """(key, value or None to delete) writes, as a table applies them (a copy of each value:
    a table holds what was sent, not the object)."""
    for key, value in writes:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = orjson.loads(orjson.dumps(value))


def labels_sent(log) -> dict[str, int]:
    labels = {}
    for _, examples in log:
        for example in examples:
            assert labels.setdefault(example["click_id"], example["label"]) == example["label"]
    return labels


def crash_and_resume(seed: int) -> tuple[dict, dict]:
    """The labels of an uninterrupted run, and of a run that crashed and resumed."""
    rng = random.Random(seed)
    events, _ = simulate(rng, rng.randint(20, 80), jitter=RULES.allowed_lateness_ms)
    records = records_of(rng, events)
    whole = Partition(random.Random(seed))
    whole.run(records)
    crashed = Partition(random.Random(seed))
    last_commit = crashed.run(records, crash_after=rng.randint(0, len(records) // 2))
    first_lost = 0 if last_commit is None else last_commit + 1
    # After the last commit each topic (each table's changelog, the labels) is delivered up to
    # a point of its own: any prefix of its writes.
    # A worker restarting after a crash discards its local store and restores from the
    # changelogs (``streams.worker.prepare_data_dir``): a local store holds writes that were
    # never delivered, and Faust's replay over it would pair a new bundle with an older
    # conversion part, a state no prefix gives.
    tables = {}
    for name in TABLES:
        kept = [w for writes, _ in crashed.log[:first_lost] for w in writes[name]]
        lost = [w for writes, _ in crashed.log[first_lost:] for w in writes[name]]
        tables[name] = {}
        write(tables[name], kept + lost[: rng.randint(0, len(lost))])
    delivered = crashed.log[: rng.randint(first_lost, len(crashed.log))]
    # A new process: tables as delivered, reading from the committed offsets.
    resumed = Partition(random.Random(seed + 1), tables)
    resumed.committed = dict(crashed.committed)
    committed = {(TOPICS[kind], 0): offset for kind, offset in crashed.committed.items()}
    step = Step(resumed.store.get)
    resumed.store.rebuild()
    recovered = recover(
        resumed.store.items(), tables["marks"].items(), committed, TOPICS, {}, RULES
    )
    resumed.attributor.restore(recovered, step)
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
