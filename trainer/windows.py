"""Windows of labeled examples by event time, exact in Kafka offsets.

An example's *label time* (``Examples.label_time``) is when its label became final: the
conversion for a positive, the close of the attribution window for a negative. Window ``k``
holds the examples whose label time falls in ``[k * size, (k + 1) * size)``. Each partition of
the labeled-examples topic arrives in about label-time order, so the window is complete once
every partition has shown an example past its end (or has nothing more to read). From that first
example on, everything a partition holds belongs to later windows, so the window ends at an
offset per partition: a restart from those offsets reads each example into exactly one window,
trained once.

Examples come in blocks (a partition's records of one fetch) with their offsets and label
times; here a block is a plain array of label times:

>>> import numpy as np
>>> def add(w, p, offsets, times):
...     w.add(p, np.array(offsets), np.array(times), np.array(times))
>>> w = WindowAssembler(size_ms=100, partitions=[0, 1], concat=np.concatenate)
>>> add(w, 0, [0, 1], [10, 130]); add(w, 1, [0, 1, 2], [20, 90, 140])
>>> w.ready(caught_up=set())
True
>>> examples, end_offsets = w.close(positions={0: 2, 1: 3})
>>> examples.tolist(), end_offsets
([10, 20, 90], {0: 1, 1: 2})
>>> w.take().tolist(), w.start_ms
([130, 140], 100)

The open window's examples can be taken before it closes (to train on as it fills); closing
returns the rest:

>>> w = WindowAssembler(size_ms=100, partitions=[0], concat=np.concatenate)
>>> add(w, 0, [0, 1], [10, 20])
>>> w.take().tolist(), w.ready(caught_up=set()), w.ready(caught_up={0})
([10, 20], False, True)
>>> add(w, 0, [2, 3], [30, 150])
>>> examples, ends = w.close(positions={0: 4})
>>> examples.tolist(), ends
([30], {0: 3})

Labels arrive a little out of order (a conversion's label is final before older clicks'
windows close); one read after its partition passed the end goes into the next window:

>>> w = WindowAssembler(size_ms=100, partitions=[0], concat=np.concatenate)
>>> add(w, 0, [0, 1, 2, 3, 4], [10, 120, 50, 130, 210])
>>> examples, ends = w.close(positions={0: 5})
>>> examples.tolist(), ends, w.ready(caught_up=set()), w.take().tolist()
([10], {0: 1}, True, [120, 50, 130])
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from trainer.examples import Examples


class WindowAssembler:
    """Collects blocks of examples into the open window and those past it, per partition."""

    def __init__(self, size_ms: int, partitions: list[int], concat: Callable = Examples.concat):
        if size_ms <= 0:
            raise ValueError(f"window size must be positive, got {size_ms} ms")
        self.size_ms, self.concat = size_ms, concat
        self.partitions = list(partitions)
        self.start_ms: int | None = None
        self.current: list = []  #: blocks of the open window not yet taken
        self.rows = 0  #: examples in ``current``
        self.taken = 0  #: examples of the open window already handed out by ``take``
        #: per partition: (offsets, times, block) read after it passed the window's end
        self.later: dict[int, list[tuple]] = {p: [] for p in self.partitions}

    @property
    def end_ms(self) -> int | None:
        return None if self.start_ms is None else self.start_ms + self.size_ms

    def add(self, partition: int, offsets: np.ndarray, times: np.ndarray, block) -> None:
        """Add a partition's block (in offset order) with its offsets and label times."""
        if not len(times):
            return
        if self.start_ms is None:
            self.start_ms = int(times[0] - times[0] % self.size_ms)
        past = np.flatnonzero(times >= self.end_ms)
        cut = 0 if self.later[partition] else int(past[0]) if past.size else len(times)
        if cut:  # before the first example past the end, the partition is in this window
            self.current.append(block.take(np.arange(cut)))
            self.rows += cut
        if cut < len(times):  # from there on this partition has passed
            rest = np.arange(cut, len(times))
            self.later[partition].append((offsets[rest], times[rest], block.take(rest)))

    def take(self):
        """The open window's examples so far (to train on while the window fills)."""
        block = self.concat(self.current) if self.current else None
        self.taken += self.rows
        self.current, self.rows = [], 0
        return block

    def ready(self, caught_up: set[int]) -> bool:
        """True when every partition has passed the window's end or has nothing left to read."""
        if self.start_ms is None or not (self.rows or self.taken):
            return False
        return all(self.later[p] or p in caught_up for p in self.partitions)

    def close(self, positions: dict[int, int]) -> tuple[object, dict[int, int]]:
        """The window's examples not yet taken (None if none) and its end offsets
        (``positions``: each partition's next offset to read); later ones start the next window."""
        block = self.concat(self.current) if self.current else None
        ends = {p: (int(self.later[p][0][0][0]) if self.later[p] else positions[p])
                for p in self.partitions}  # fmt: skip
        later, closed_end = self.later, self.end_ms
        self.current, self.rows, self.taken = [], 0, 0
        self.later = {p: [] for p in self.partitions}
        first = min((int(times.min()) for items in later.values() for _, times, _ in items),
                    default=None)  # fmt: skip
        # The next window follows the closed one; a late example (label time before it) read
        # after its partition passed the end goes into the next window.
        self.start_ms = None if first is None else max(closed_end, first - first % self.size_ms)
        for p, items in later.items():
            for offsets, times, rest in items:
                self.add(p, offsets, times, rest)
        return block, ends
