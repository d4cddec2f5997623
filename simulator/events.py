"""The simulated traffic as the event stream that Kafka carries, with faults on demand.

Clicks and conversions are merged in event-time order. Faults displace or add records: a
duplicate is the same event (same id) again shortly after, an out-of-order or late event is
sent after its turn, and a malformed record breaks the contract. Each record says which fault
it is (``fault``), so tests can count them; valid events are the same whatever the faults.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator

import numpy as np

from rarecvr import topics
from rarecvr.produce import Record
from simulator.marketplace import Marketplace
from simulator.tables import Vocab, clicks_table
from simulator.traffic import Clicks, generate

MALFORMED_KINDS = ("not_json", "missing_event_id", "ts_not_integer", "negative_ts", "empty_setup")


def click_id(seq: int) -> str:
    return f"c{seq}"


def click_records(chunk: Clicks, vocab: Vocab) -> Iterator[Record]:
    """The click event of every click of a chunk, in order."""
    table = clicks_table(chunk, vocab)
    rows = table.drop_columns(["converted", "conversion_ts_ms"]).to_pylist()
    for row in rows:
        cid = click_id(row.pop("click_id"))
        ts = row.pop("ts_ms")
        event = {
            "v": 1,
            "event_id": cid,
            "ts_ms": ts,
            "setup_id": row.pop("setup_id"),
            "advertiser_id": row.pop("advertiser_id"),
            "true_p": row.pop("true_p"),
        }
        row["recency_days"] = round(row["recency_days"], 1)
        event["features"] = row
        yield Record(topics.CLICKS.name, cid.encode(), json.dumps(event).encode(), ts)


def conversion_record(seq: int, setup_id: str, ts_ms: int) -> Record:
    cid = click_id(seq)
    event = {"v": 1, "event_id": f"v{seq}", "click_id": cid, "setup_id": setup_id, "ts_ms": ts_ms}
    return Record(topics.CONVERSIONS.name, cid.encode(), json.dumps(event).encode(), ts_ms)


def malformed_record(kind: str, seq: int, ts_ms: int) -> Record:
    """A click-topic record that breaks the contract in the way ``kind`` names."""
    good = {"v": 1, "event_id": f"m{seq}", "ts_ms": ts_ms, "setup_id": "set00000"}
    good |= {"advertiser_id": "adv0000", "features": {}}
    if kind == "not_json":
        value = b'{"v": 1, "event_id": "m' + str(seq).encode() + b'", broken'
    else:
        if kind == "missing_event_id":
            del good["event_id"]
        elif kind == "ts_not_integer":
            good["ts_ms"] = str(ts_ms)
        elif kind == "negative_ts":
            good["ts_ms"] = -ts_ms
        elif kind == "empty_setup":
            good["setup_id"] = ""
        value = json.dumps(good).encode()
    return Record(topics.CLICKS.name, f"m{seq}".encode(), value, ts_ms, f"malformed:{kind}")


def event_stream(market: Marketplace, chunk_size: int = 200_000) -> Iterator[Record]:
    """Every record of the simulated traffic, in the order it is sent."""
    cfg, faults = market.cfg, market.cfg.faults
    rng = np.random.default_rng([cfg.seed, 4])
    vocab = Vocab(market)
    heap: list[tuple[int, int, Record]] = []
    tiebreak = 0

    def push(emit_ts: int, record: Record) -> None:
        nonlocal tiebreak
        tiebreak += 1
        heapq.heappush(heap, (emit_ts, tiebreak, record))

    def push_with_faults(record: Record) -> None:
        u = rng.random()
        if u < faults.out_of_order:
            delay = int(rng.integers(1, faults.out_of_order_max_ms))
            push(record.ts_ms + delay, _with_fault(record, "out_of_order"))
        elif u < faults.out_of_order + faults.late:
            delay = int(rng.integers(faults.late_min_ms, faults.late_max_ms))
            push(record.ts_ms + delay, _with_fault(record, "late"))
        else:
            push(record.ts_ms, record)
        if rng.random() < faults.duplicate:
            push(record.ts_ms + int(rng.integers(1, 60_000)), _with_fault(record, "duplicate"))
        if rng.random() < faults.malformed:
            kind = MALFORMED_KINDS[int(rng.integers(len(MALFORMED_KINDS)))]
            push(record.ts_ms, malformed_record(kind, tiebreak, record.ts_ms))

    chunks = generate(market, chunk_size)
    chunk = next(chunks, None)
    while chunk is not None:
        following = next(chunks, None)
        boundary = int(following.ts_ms[0]) if following is not None else None
        for record in click_records(chunk, vocab):
            push_with_faults(record)
        setup_ids = market.setup_ids
        for i in np.flatnonzero(chunk.converted):
            setup = setup_ids[chunk.features["setup"][i]]
            push_with_faults(
                conversion_record(int(chunk.seq[i]), setup, int(chunk.conversion_ts_ms[i]))
            )
        while heap and (boundary is None or heap[0][0] < boundary):
            yield heapq.heappop(heap)[2]
        chunk = following


def _with_fault(record: Record, fault: str) -> Record:
    return Record(record.topic, record.key, record.value, record.ts_ms, fault)
