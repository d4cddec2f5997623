"""Each setup's CVR state from a log of past clicks, so a new deployment's stabilizer judges
setups on their own history from its first minute.

Without it every setup starts from its peers' prior with no evidence of its own, and a setup
moves to the hard task only after a dwell and enough live clicks (hours of event time; in a
three-minute demo on a slow machine, never). ``rarecvr worker --history`` sends the log as CVR
deltas to ``rarecvr.cvr-deltas`` before the worker starts; the count agent applies them as it
applies live ones, and the stabilizer's first decision for the setup (its cold start, by the
posterior mean) then rests on the setup's whole history.

- Clicks of a setup in the same ``bucket_ms`` bucket travel as one delta with ``n`` clicks at the
  bucket's start (the decay is off by at most a bucket, a small share of a half-life);
  conversions one each, at their own time with their delay, counted only within the
  attribution window, as the worker counts them.
- One record per setup, or several of at most ``MAX_ENTRIES`` deltas for a long history, the
  newest first: the stabilizer decides on the first record and the older ones add their
  (decayed) counts after it (decay does not depend on arrival order, ``streams.decay``).
- The deltas' source is ``history:<file name>`` with increasing offsets: sending the same log
  again (a restart, a second worker) changes nothing.

>>> from pathlib import Path
>>> import pyarrow as pa
>>> table = pa.table({"ts_ms": [0, 60_000, 7_200_000], "conversion_ts_ms": [None, 600_000, None],
...                   "setup_id": ["s", "s", "s"]})
>>> log = HistoryLog(Path("log.csv"), unit="ms")
>>> for setup, entries in deltas(table, log, bucket_ms=3_600_000, window_ms=86_400_000):
...     print(setup, [(d["kind"], d["ts_ms"], d.get("n"), d["offset"]) for d in entries])
s [('click', 0, 2, 0), ('conversion', 600000, None, 1), ('click', 7200000, 1, 2)]
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rarecvr.contracts import PEER_TAGS, peer_group
from rarecvr.logfile import HistoryLog, millis, read_table, setup_ids
from streams import cvr

#: Deltas in one record at most (a record stays well under Kafka's default 1 MB).
MAX_ENTRIES = 5_000


def deltas(
    table: pa.Table,
    log: HistoryLog,
    bucket_ms: int,
    window_ms: int,
    max_entries: int = MAX_ENTRIES,
) -> Iterator[tuple[str, list[dict]]]:
    """(setup id, a record's deltas), each setup's newest record first; KeyError names a
    missing column, ValueError a row without a click time."""
    missing = [
        c for c in (log.click_time, log.conversion_time, *log.setup) if c not in table.column_names
    ]
    if missing:
        raise KeyError(f"{log.path} has no column(s) {missing}; it has {table.column_names}")
    setups = setup_ids(table, list(log.setup)).to_numpy(zero_copy_only=False).astype(object)
    clicks = millis(table[log.click_time], log.unit, log.click_time)
    if np.isnan(clicks).any():
        row = int(np.flatnonzero(np.isnan(clicks))[0])
        raise ValueError(f"{log.path}: row {row} has no click time in {log.click_time!r}")
    converted = millis(table[log.conversion_time], log.unit, log.conversion_time)
    delay = converted - clicks
    attributed = (delay >= 0) & (delay <= window_ms)
    names, first, codes = np.unique(setups, return_index=True, return_inverse=True)
    groups = _groups(table, setups, first)
    source = f"history:{log.path.name}"
    clicks = clicks.astype(np.int64)
    bucket = clicks - clicks % bucket_ms
    events: dict[str, list[tuple[int, dict]]] = {}
    keys, counts = np.unique(np.stack([bucket, codes]), axis=1, return_counts=True)
    for (ts, code), n in zip(keys.T.tolist(), counts.tolist(), strict=True):
        setup = names[code]
        entry = {"kind": "click", "ts_ms": ts, "n": n, "group": groups[setup]}
        events.setdefault(setup, []).append((ts, entry))
    for row in np.flatnonzero(attributed):
        ts, setup = int(converted[row]), setups[row]
        entry = {"kind": "conversion", "ts_ms": ts, "delay_ms": int(delay[row])}
        events.setdefault(setup, []).append((ts, entry))
    offset = 0
    for setup in sorted(events):
        timed = [entry for _, entry in sorted(events[setup], key=lambda e: e[0])]
        for end in range(len(timed), 0, -max_entries):
            chunk = timed[max(end - max_entries, 0) : end]
            yield setup, [e | {"source": source, "offset": offset + i} for i, e in enumerate(chunk)]
            offset += len(chunk)


def _groups(table: pa.Table, setups: np.ndarray, first: np.ndarray) -> dict[str, str]:
    """Each setup's peer group from its first row's tags (rows ``first``; "/" where the log has
    none)."""
    tags = {
        tag: pc.cast(table[tag], pa.string()).to_numpy(zero_copy_only=False)[first]
        for tag in PEER_TAGS
        if tag in table.column_names
    }
    return {
        setups[row]: peer_group({tag: values[i] or "" for tag, values in tags.items()})
        for i, row in enumerate(first)
    }


def send(bootstrap: str, log: HistoryLog, params: cvr.CvrParams) -> tuple[int, int]:
    """Send the log's deltas to ``rarecvr.cvr-deltas``; return (records, setups)."""
    from kafka import KafkaProducer

    from rarecvr import kafka_auth
    from rarecvr.topics import CVR_DELTAS, partition_of

    table = read_table(log.path)
    producer = KafkaProducer(**kafka_auth.kafka_python(bootstrap), linger_ms=20, acks="all")
    records, setups = 0, set()
    try:
        for setup, entries in deltas(table, log, params.bucket_ms, params.window_ms):
            key = setup.encode()
            producer.send(
                CVR_DELTAS.name,
                key=key,
                value=cvr.message(setup, entries),
                # the partition of the setup's live deltas, where its CVR state lives
                partition=partition_of(key, CVR_DELTAS.partitions),
            )
            records += 1
            setups.add(setup)
        producer.flush()
    finally:
        producer.close()
    return records, len(setups)
