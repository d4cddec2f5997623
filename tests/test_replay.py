"""`rarecvr replay` turns a user's click log into valid events on the real broker, in order."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from rarecvr.contracts import Click, Conversion, decode
from rarecvr.schema import FeatureSchema
from rarecvr.schema_topic import latest_schema
from rarecvr.topics import CLICKS, CONVERSIONS, ensure_topics
from tests.streams_harness import events_of, read_topic


def test_replay_sends_every_click_and_conversion_in_event_time_order(kafka, tmp_path, monkeypatch):
    prefix = f"r{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("RARECVR_TOPIC_PREFIX", prefix)
    ensure_topics(kafka.bootstrap)
    rows = ["ts,conv_ts,campaign,event,device,price"]
    for i in range(60):
        conv = str(i * 1000 + 500) if i % 4 == 0 else ""
        rows.append(f"{i * 1000},{conv},cmp{i % 3},purchase,{'ios' if i % 2 else 'web'},{i / 10}")
    log = tmp_path / "log.csv"
    log.write_text("\n".join(rows) + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rarecvr.cli",
            "replay",
            "--data",
            str(log),
            "--click-time",
            "ts",
            "--conversion-time",
            "conv_ts",
            "--setup",
            "campaign,event",
            "--features",
            "device,price",
            "--unit",
            "ms",
            "--window-days",
            "0.0005",
            "--bootstrap",
            kafka.bootstrap,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr
    assert "categorical: setup_id, device; numeric: price" in result.stdout
    assert "warning" not in result.stderr
    schema, source = latest_schema(kafka.bootstrap)
    assert schema == FeatureSchema(("setup_id", "device"), ("price",)) and source == str(log)
    records = read_topic(kafka.bootstrap, CLICKS)
    clicks = [decode(Click, raw) for r in records for raw in events_of(r)]
    conversions = [
        decode(Conversion, raw)
        for r in read_topic(kafka.bootstrap, CONVERSIONS)
        for raw in events_of(r)
    ]
    assert len(clicks) == 60 and len(conversions) == 15
    assert len(records) <= 2 * CLICKS.partitions, "clicks go many a record, per partition"
    assert {c.setup_id for c in clicks} == {"cmp0|purchase", "cmp1|purchase", "cmp2|purchase"}
    assert clicks[0].features.keys() == {"device", "price"}
    by_id = {c.event_id: c for c in clicks}
    assert all(by_id[v.click_id].ts_ms + 500 == v.ts_ms for v in conversions)
    for partition in range(CLICKS.partitions):
        times = [
            decode(Click, raw).ts_ms
            for r in records
            if r.partition == partition
            for raw in events_of(r)
        ]
        assert times == sorted(times)


def test_replay_names_a_missing_column(tmp_path):
    import pyarrow as pa

    from streams.replay import log_records

    with pytest.raises(KeyError, match="no column"):
        list(log_records(pa.table({"ts": [1]}), "ts", "conv", ["s"], []))
