"""A history log as CVR deltas (``streams.seed``): the state it seeds is the state its clicks
and conversions one by one would give, a long history comes newest first, and sending it again
changes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from rarecvr.logfile import HistoryLog
from rarecvr.units import DAY_MS, HOUR_MS, MINUTE_MS
from streams import cvr, seed

PARAMS = cvr.CvrParams(half_life_ms=DAY_MS, window_ms=6 * HOUR_MS, bucket_ms=15 * MINUTE_MS)
LOG = HistoryLog(Path("log.parquet"), unit="ms")


def history(rng, clicks=2_000, days=3):
    ts = np.sort(rng.integers(0, days * DAY_MS, clicks))
    delay = rng.exponential(2 * HOUR_MS, clicks).astype(np.int64)
    converted = rng.random(clicks) < 0.05
    return pa.table(
        {
            "ts_ms": ts,
            "conversion_ts_ms": pa.array(np.where(converted, ts + delay, 0), mask=~converted),
            "setup_id": rng.choice(["a", "b", "c"], clicks),
            "advertiser_type": ["retail"] * clicks,
            "category": ["purchase"] * clicks,
        }
    )


def apply_all(records, state=None) -> tuple[dict, int]:
    applied = 0
    for entry in records:
        state, fresh = cvr.apply(state, entry, PARAMS)
        applied += fresh
    return state, applied


def test_a_seeded_state_equals_its_clicks_one_by_one_within_a_buckets_decay():
    rng = np.random.default_rng(3)
    table = history(rng)
    seeded: dict[str, dict] = {}
    for setup, entries in seed.deltas(table, LOG, PARAMS.bucket_ms, PARAMS.window_ms):
        seeded[setup], _ = apply_all(entries, seeded.get(setup))
        assert {e["group"] for e in entries if e["kind"] == "click"} == {"retail/purchase"}
    rows = table.to_pylist()
    for setup in ("a", "b", "c"):
        one_by_one = []
        for i, row in enumerate(rows):
            if row["setup_id"] != setup:
                continue
            one_by_one.append({"kind": "click", "ts_ms": row["ts_ms"], "source": "c", "offset": i})
            conversion = row["conversion_ts_ms"]
            if conversion is not None and conversion - row["ts_ms"] <= PARAMS.window_ms:
                delay = conversion - row["ts_ms"]
                one_by_one.append(
                    {"kind": "conversion", "ts_ms": conversion, "delay_ms": delay, "source": "v"}
                    | {"offset": i}
                )
        exact, _ = apply_all(one_by_one)
        now = 3 * DAY_MS + DAY_MS  # a day after the history, every click mature
        got, want = cvr.estimate(seeded[setup], now, PARAMS), cvr.estimate(exact, now, PARAMS)
        bucket_decay = 1 - 2 ** (-PARAMS.bucket_ms / PARAMS.half_life_ms)
        assert got["clicks"] == pytest.approx(want["clicks"], rel=bucket_decay)
        assert got["clicks"] <= want["clicks"]  # stamped at their bucket's start: a little older
        assert got["conversions"] == pytest.approx(want["conversions"], rel=1e-12)
        assert seeded[setup]["delays"] == exact["delays"]


def test_a_long_history_comes_newest_first_and_sending_it_again_changes_nothing():
    table = history(np.random.default_rng(4), clicks=3_000)
    records = list(seed.deltas(table, LOG, PARAMS.bucket_ms, PARAMS.window_ms, max_entries=100))
    a = [entries for setup, entries in records if setup == "a"]
    assert len(a) > 2 and all(len(entries) <= 100 for entries in a)
    newest = [max(e["ts_ms"] for e in entries) for entries in a]
    assert newest == sorted(newest, reverse=True)
    state, applied = apply_all(e for entries in a for e in entries)
    assert applied == sum(map(len, a))
    again, applied = apply_all((e for entries in a for e in entries), state)
    assert applied == 0 and again == state


def test_a_history_without_a_named_column_is_refused_naming_its_columns():
    table = history(np.random.default_rng(5)).drop_columns(["conversion_ts_ms"])
    with pytest.raises(KeyError, match=r"no column\(s\) \['conversion_ts_ms'\].*setup_id"):
        next(seed.deltas(table, LOG, PARAMS.bucket_ms, PARAMS.window_ms))
