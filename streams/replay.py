"""A user's click log as click and conversion events, in event-time order.

One row per click; the conversion-time column is empty when the click did not convert. Times
are anything ``rarecvr.logfile.millis`` reads (epoch numbers, ISO-8601 or datetime strings,
timestamps). The log's feature schema is published first (``rarecvr.schema_topic``).

>>> import pyarrow as pa
>>> log = pa.table({"t": [20, 10], "conv_t": [None, 15], "setup": ["s1", "s2"],
...                 "device": ["ios", "web"]})
>>> [(r.topic.split(".")[-1], r.ts_ms) for r in log_records(log, "t", "conv_t", ["setup"],
...                                                          ["device"], unit="ms")]
[('clicks', 10), ('conversions', 15), ('clicks', 20)]
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from rarecvr.logfile import advertiser_ids, millis, setup_ids
from rarecvr.produce import Record
from rarecvr.topics import CLICKS, CONVERSIONS


def log_records(
    table: pa.Table,
    click_time: str,
    conversion_time: str,
    setup: list[str],
    features: list[str],
    unit: str = "auto",
    id_column: str | None = None,
    advertiser: str | None = None,
) -> Iterator[Record]:
    """Click and conversion records for every row, sorted by event time."""
    missing = [
        c
        for c in [
            click_time,
            conversion_time,
            *setup,
            *features,
            *filter(None, [id_column, advertiser]),
        ]
        if c not in table.column_names
    ]
    if missing:
        raise KeyError(f"the log has no column(s) {missing}; it has {table.column_names}")
    clicks_at = millis(table[click_time], unit, click_time)
    converted_at = millis(table[conversion_time], unit, conversion_time)
    if np.isnan(clicks_at).any():
        row = int(np.flatnonzero(np.isnan(clicks_at))[0])
        raise ValueError(f"row {row} has no click time in column {click_time!r}")
    setup_array = setup_ids(table, setup)
    setups = setup_array.to_pylist()
    ids = table[id_column].to_pylist() if id_column else range(table.num_rows)
    advertisers = advertiser_ids(table, advertiser, setup_array).to_pylist()
    columns = {f: table[f].to_pylist() for f in features}
    events: list[tuple[int, int, int, Record]] = []
    for row, (cid, setup_id, adv) in enumerate(zip(ids, setups, advertisers, strict=True)):
        click_id = f"r{cid}" if id_column is None else str(cid)
        ts = int(clicks_at[row])
        feats = {
            f: v for f, v in ((f, columns[f][row]) for f in features) if v is not None and v == v
        }
        click = {
            "v": 1,
            "event_id": click_id,
            "ts_ms": ts,
            "setup_id": setup_id,
            "advertiser_id": str(adv),
            "features": feats,
        }
        key = click_id.encode()
        events.append((ts, 0, row, Record(CLICKS.name, key, json.dumps(click).encode(), ts)))
        if not np.isnan(converted_at[row]):
            cts = int(converted_at[row])
            conversion = {
                "v": 1,
                "event_id": f"{click_id}-conversion",
                "click_id": click_id,
                "setup_id": setup_id,
                "ts_ms": cts,
            }
            record = Record(CONVERSIONS.name, key, json.dumps(conversion).encode(), cts)
            events.append((cts, 1, row, record))
    events.sort(key=lambda e: e[:3])
    for *_, record in events:
        yield record


def log_span_days(records: list[Record]) -> float:
    """Days of event time between a log's first and last click."""
    clicks = [r.ts_ms for r in records if r.topic == CLICKS.name]
    return (max(clicks) - min(clicks)) / 86_400_000 if clicks else 0.0


def describe_times(records: list[Record]) -> str:
    """The span of a log's clicks in words (UTC), so that a misread time unit shows."""
    clicks = [r.ts_ms for r in records if r.topic == CLICKS.name]
    if not clicks:
        return "none"
    first, last = (
        datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        for t in (min(clicks), max(clicks))
    )
    return f"{len(clicks)} from {first} to {last} UTC ({log_span_days(records):.1f} days)"


def window_warning(span_days: float, window_days: float) -> str | None:
    """What goes wrong when a log is shorter than the attribution window, or None.

    >>> window_warning(3.0, 7.0)[:60]
    'the log spans 3.0 days, less than the 7-day attribution wind'
    >>> window_warning(3.0, 1.0) is None
    True
    """
    if span_days >= window_days:
        return None
    return (
        f"the log spans {span_days:.1f} days, less than the {window_days:g}-day attribution "
        "window: no click's window closes within it, so the worker labels no negatives. Run the "
        "worker (and pass here) a shorter --window-days."
    )
