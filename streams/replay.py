"""A user's click log as click and conversion events, in event-time order.

One row per click; the conversion-time column is empty when the click did not convert. Times
are integers in ``unit`` (``ms`` or ``s`` since the Unix epoch) or timestamps.

>>> import pyarrow as pa
>>> log = pa.table({"t": [20, 10], "conv_t": [None, 15], "setup": ["s1", "s2"],
...                 "device": ["ios", "web"]})
>>> [(r.topic.split(".")[-1], r.ts_ms) for r in log_records(log, "t", "conv_t", ["setup"],
...                                                          ["device"])]
[('clicks', 10), ('conversions', 15), ('clicks', 20)]
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from rarecvr.logfile import millis
from rarecvr.produce import Record
from rarecvr.topics import CLICKS, CONVERSIONS


def log_records(
    table: pa.Table,
    click_time: str,
    conversion_time: str,
    setup: list[str],
    features: list[str],
    unit: str = "ms",
    id_column: str | None = None,
    advertiser: str | None = None,
) -> Iterator[Record]:
    """Click and conversion records for every row, sorted by event time."""
    missing = [c for c in [click_time, conversion_time, *setup, *features,
                           *filter(None, [id_column, advertiser])]
               if c not in table.column_names]  # fmt: skip
    if missing:
        raise KeyError(f"the log has no column(s) {missing}; it has {table.column_names}")
    clicks_at = millis(table[click_time], unit)
    converted_at = millis(table[conversion_time], unit)
    if np.isnan(clicks_at).any():
        row = int(np.flatnonzero(np.isnan(clicks_at))[0])
        raise ValueError(f"row {row} has no click time in column {click_time!r}")
    setups = [
        "|".join(str(v) for v in values)
        for values in zip(*(table[c].to_pylist() for c in setup), strict=True)
    ]
    ids = table[id_column].to_pylist() if id_column else range(table.num_rows)
    advertisers = table[advertiser].to_pylist() if advertiser else setups
    columns = {f: table[f].to_pylist() for f in features}
    events: list[tuple[int, int, int, Record]] = []
    for row, (cid, setup_id, adv) in enumerate(zip(ids, setups, advertisers, strict=True)):
        click_id = f"r{cid}" if id_column is None else str(cid)
        ts = int(clicks_at[row])
        feats = {f: v for f, v in ((f, columns[f][row]) for f in features) if v is not None}
        click = {"v": 1, "event_id": click_id, "ts_ms": ts, "setup_id": setup_id,
                 "advertiser_id": str(adv), "features": feats}  # fmt: skip
        key = click_id.encode()
        events.append((ts, 0, row, Record(CLICKS.name, key, json.dumps(click).encode(), ts)))
        if not np.isnan(converted_at[row]):
            cts = int(converted_at[row])
            conversion = {"v": 1, "event_id": f"{click_id}-conversion", "click_id": click_id,
                          "setup_id": setup_id, "ts_ms": cts}  # fmt: skip
            record = Record(CONVERSIONS.name, key, json.dumps(conversion).encode(), cts)
            events.append((cts, 1, row, record))
    events.sort(key=lambda e: e[:3])
    for *_, record in events:
        yield record
