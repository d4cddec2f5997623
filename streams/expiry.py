"""Which click states a partition's watermark has passed, and when a closed state may go.

Each partition keeps a heap of (deadline, click id) in memory, rebuilt from the table on a
(re)assignment (``streams.recovery``), and the keys of its closed states: those kept, after
``on_watermark`` closed them, until their records are committed (``attribution.forgettable``).

>>> from streams.attribution import Rules, on_click
>>> from streams.step import Step
>>> rules = Rules(window_ms=100, allowed_lateness_ms=0, retention_ms=50)
>>> state, _ = on_click(None, {"event_id": "c1", "ts_ms": 10, "setup_id": "s",
...                            "advertiser_id": "a", "features": {}, "true_p": None}, rules)
>>> table = {"c1": dict(state, p=0)}
>>> expiry, step = Expiry(rules), Step(table.get)
>>> expiry.track(0, "c1", table["c1"])
>>> expiry.expire(step, 0, 109, {}, ["clicks", 0, 5, 0], "here", lambda kind, p: 0)
[]
>>> [e.example["label"] for e in expiry.expire(step, 0, 110, {}, ["clicks", 0, 6, 0], "here",
...                                                lambda kind, p: 0)]
[0]
>>> step.get("c1")["label_src"], expiry.pending(0)
(['clicks', 0, 6, 0], 1)
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from streams.attribution import STREAMS, Rules, deadline, forgettable, on_watermark
from streams.step import Step


class Expiry:
    """Per partition: the heap of (deadline, key) to expire and the closed states' keys."""

    def __init__(self, rules: Rules):
        self.rules = rules
        self.heaps: dict[int, list] = {}
        self.closed: dict[int, list] = {}
        self.progress: dict[int, tuple] = {}  #: committed offsets when ``closed`` was checked

    def track(self, p: int, key, state: dict) -> None:
        """Expire ``state`` (of partition ``p``) when the watermark passes its deadline; a
        closed one, once its records are committed."""
        if state.get("closed"):
            self.closed.setdefault(p, []).append(key)
        else:
            heapq.heappush(self.heaps.setdefault(p, []), (deadline(state, self.rules), key))

    def pending(self, p: int) -> int:
        return len(self.heaps.get(p, ()))

    def expire(
        self,
        step: Step,
        p: int,
        watermark: int,
        offsets: dict[str, int],
        source: list,
        where,
        committed: Callable[[str, int], int],
    ) -> list:
        """Apply ``on_watermark`` to partition ``p``'s states whose deadline ``watermark``
        passed, in the step; return their effects. A state it closes records the partition's
        ``offsets``; a label records ``source``, the event that moved the watermark.
        ``committed(kind, partition)`` is the next offset to read of each stream."""
        heap = self.heaps.setdefault(p, [])
        closed = self.closed.get(p, [])
        effects = []
        while heap and heap[0][0] <= watermark:
            _, key = heapq.heappop(heap)
            state = step.get(key)
            if state is None:
                continue
            due = deadline(state, self.rules)
            if due > watermark:
                heapq.heappush(heap, (due, key))
                continue
            new, caused = on_watermark(state, watermark, self.rules)
            if new is None:
                step.put(key, dict(state, closed=dict(offsets)), where)
                closed.append(key)
            else:
                if caused:
                    new["label_src"] = source
                step.put(key, new, where)
                heapq.heappush(heap, (deadline(new, self.rules), key))
            effects += caused
        self._forget(step, p, closed, where, committed)
        return effects

    def _forget(self, step: Step, p: int, keys: list, where, committed) -> None:
        """Delete the closed states whose records are all committed; keep the others. (Checked
        again only after a commit: a state just closed holds a record not yet committed.)"""
        progress = tuple(committed(kind, p) for kind in STREAMS)
        if self.progress.get(p) == progress:
            self.closed[p] = keys
            return
        self.progress[p] = progress
        kept = []
        for key in keys:
            state = step.get(key)
            if state is None or not state.get("closed"):
                continue  # deleted, or a new event started it over
            if forgettable(state, committed):
                step.delete(key, where)
            else:
                kept.append(key)
        self.closed[p] = kept
