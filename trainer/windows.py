"""Windows of labeled examples by event time, exact in Kafka offsets.

An example's *label time* is when its label became final: the conversion for a positive, the
close of the attribution window for a negative. Window ``k`` holds the examples whose label time
falls in ``[k * size, (k + 1) * size)``. Each partition of the labeled-examples topic arrives in
about label-time order, so the window is complete once every partition has shown an example past
its end (or has nothing more to read). From that first example on, everything a partition
holds belongs to later windows, so the window ends at an offset per partition: a restart from
those offsets reads each example into exactly one window, trained once.

>>> w = WindowAssembler(size_ms=100, partitions=[0, 1])
>>> for p, offset, t in [(0, 0, 10), (1, 0, 20), (0, 1, 130), (1, 1, 90), (1, 2, 140)]:
...     w.add(p, offset, t, {"t": t})
>>> w.ready(caught_up=set())
True
>>> examples, end_offsets = w.close(positions={0: 2, 1: 3})
>>> [e["t"] for e in examples], end_offsets
([10, 20, 90], {0: 1, 1: 2})
>>> [e["t"] for e in w.current], w.start_ms
([130, 140], 100)

The open window's examples can be taken before it closes (to train on as it fills); closing
returns the rest:

>>> w = WindowAssembler(size_ms=100, partitions=[0])
>>> for offset, t in enumerate([10, 20]):
...     w.add(0, offset, t, {"t": t})
>>> [e["t"] for e in w.take()], w.ready(caught_up=set()), w.ready(caught_up={0})
([10, 20], False, True)
>>> w.add(0, 2, 30, {"t": 30}); w.add(0, 3, 150, {"t": 150})
>>> w.close(positions={0: 4})
([{'t': 30}], {0: 3})

Labels arrive a little out of order (a conversion's label is final before older clicks'
windows close); one read after its partition passed the end goes into the next window:

>>> w = WindowAssembler(size_ms=100, partitions=[0])
>>> for offset, t in enumerate([10, 120, 50, 130, 210]):
...     w.add(0, offset, t, {"t": t})
>>> examples, ends = w.close(positions={0: 5})
>>> [e["t"] for e in examples], ends, [e["t"] for e in w.current], w.ready(caught_up=set())
([10], {0: 1}, [120, 50, 130], True)
"""

from __future__ import annotations


def label_time(example: dict, attribution_window_ms: int) -> int:
    """When the example's label became final (event time)."""
    if example["label"] == 1 and example.get("conversion_ts_ms") is not None:
        return int(example["conversion_ts_ms"])
    return int(example["click_ts_ms"]) + attribution_window_ms


class WindowAssembler:
    """Collects examples into the open window and those past it, per partition."""

    def __init__(self, size_ms: int, partitions: list[int]):
        if size_ms <= 0:
            raise ValueError(f"window size must be positive, got {size_ms} ms")
        self.size_ms = size_ms
        self.partitions = list(partitions)
        self.start_ms: int | None = None
        self.current: list[dict] = []
        self.taken = 0  #: examples of the open window already handed out by ``take``
        self.later: dict[int, list[tuple[int, int, dict]]] = {p: [] for p in self.partitions}

    @property
    def end_ms(self) -> int | None:
        return None if self.start_ms is None else self.start_ms + self.size_ms

    def add(self, partition: int, offset: int, t_ms: int, example: dict) -> None:
        if self.start_ms is None:
            self.start_ms = t_ms - t_ms % self.size_ms
        if self.later[partition] or t_ms >= self.end_ms:
            self.later[partition].append((offset, t_ms, example))  # this partition has passed
        else:
            self.current.append(example)

    def take(self) -> list[dict]:
        """The open window's examples so far (to train on while the window fills)."""
        examples, self.current = self.current, []
        self.taken += len(examples)
        return examples

    def ready(self, caught_up: set[int]) -> bool:
        """True when every partition has passed the window's end or has nothing left to read."""
        if self.start_ms is None or not (self.current or self.taken):
            return False
        return all(self.later[p] or p in caught_up for p in self.partitions)

    def close(self, positions: dict[int, int]) -> tuple[list[dict], dict[int, int]]:
        """The window's examples not yet taken and its end offsets (``positions``: each
        partition's next offset to read); later examples start the next window."""
        examples = self.current
        ends = {p: (self.later[p][0][0] if self.later[p] else positions[p])
                for p in self.partitions}  # fmt: skip
        later, closed_end = self.later, self.end_ms
        self.current, self.later, self.taken = [], {p: [] for p in self.partitions}, 0
        times = [t for items in later.values() for _, t, _ in items]
        # The next window follows the closed one; a late example (label time before it) read
        # after its partition passed the end goes into the next window.
        self.start_ms = max(closed_end, min(times) - min(times) % self.size_ms) if times else None
        for p, items in later.items():
            for offset, t, example in items:
                self.add(p, offset, t, example)
        return examples, ends
