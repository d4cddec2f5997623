"""Faust's own consume-only loop over the event topics: the ceiling its per-record path puts on
a worker that reads one event a record (``bench.streams`` runs it beside the worker).

    python -m bench.faust_consume BOOTSTRAP TOTAL_RECORDS OUT_JSON worker -l warn

Reads every record of the clicks and conversions topics (the ``RARECVR_TOPIC_PREFIX`` ones) with
an agent that does nothing with them, and writes ``{"records": N, "seconds": S}`` (from the
first record to the last) to OUT_JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import faust

from rarecvr.topics import CLICKS, CONVERSIONS, EVENT_PARTITIONS


def create_app(bootstrap: str, total: int, out: Path) -> faust.App:
    app = faust.App(
        f"{CLICKS.name}.faust-consume-only",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_partitions=EVENT_PARTITIONS,
        consumer_auto_offset_reset="earliest",
    )
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    topic = app.topic(CLICKS.name, CONVERSIONS.name, **raw)
    seen = {"n": 0, "first": None}

    @app.agent(topic)
    async def consume(stream):
        async for _ in stream.events():
            seen["n"] += 1
            if seen["first"] is None:
                seen["first"] = time.perf_counter()
            if seen["n"] == total:
                seconds = time.perf_counter() - seen["first"]
                out.write_text(json.dumps({"records": total, "seconds": seconds}))

    return app


if __name__ == "__main__":
    bootstrap, total, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    sys.argv = [sys.argv[0], *sys.argv[4:]]
    create_app(bootstrap, total, out).main()
