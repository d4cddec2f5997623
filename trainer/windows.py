"""Windows of labeled examples by event time, exact in Kafka offsets.

An example's *label time* (``Examples.label_time``) is when its label became final: the
conversion for a positive, the close of the attribution window for a negative. Window ``k``
holds the examples whose label time falls in ``[k * size, (k + 1) * size)``. Each partition of
the labeled-examples topic arrives in about label-time order, so the window is complete once
every partition has shown an example past its end (or has had nothing more to read for a while,
``QuietPartitions``: a trainer at the head of a live topic is caught up between the worker's
steps, and a window closed then would hold a few minutes of labels). From the
record of that first example on, everything a partition holds belongs to later windows, so the
window ends at an offset per partition: a restart from those offsets reads each example into
exactly one window, trained once. (A record holds several examples: those of it before the
first one past the end go to the next window too, with the rest of their record.)

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

A record's examples share its offset; the one that passes the end takes its whole record along:

>>> w = WindowAssembler(size_ms=100, partitions=[0], concat=np.concatenate)
>>> add(w, 0, [0, 0, 1, 1, 1], [10, 20, 30, 120, 40])
>>> examples, ends = w.close(positions={0: 2})
>>> examples.tolist(), ends, w.take().tolist()
([10, 20], {0: 1}, [30, 120, 40])

After a restart from those offsets, the next window starts where the closed one ended
(``resume_ms``, from the trainer's state), not at the late example first read again:

>>> w = WindowAssembler(size_ms=100, partitions=[0], concat=np.concatenate, resume_ms=100)
>>> add(w, 0, [1, 1, 1, 2], [30, 120, 40, 150])
>>> w.start_ms, w.take().tolist()
(100, [30, 120, 40, 150])

A window whose every partition holds only records reaching past its end has nothing of its own:
it is skipped.

>>> w = WindowAssembler(size_ms=100, partitions=[0, 1], concat=np.concatenate)
>>> add(w, 0, [0, 0], [10, 110]); add(w, 1, [0, 0], [20, 230])
>>> w.ready(caught_up={0}), w.start_ms, w.take().tolist()  # window 0 skipped
(True, 100, [10, 110])
>>> examples, ends = w.close(positions={0: 1, 1: 1})
>>> examples, ends, w.start_ms, w.take().tolist()
(None, {0: 1, 1: 0}, 200, [20, 230])

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

    def __init__(
        self,
        size_ms: int,
        partitions: list[int],
        concat: Callable = Examples.concat,
        resume_ms: int | None = None,
    ):
        """``resume_ms``: the end of the last window closed (after a restart, from the trainer's
        state): the next window starts there or later, whatever the first example read."""
        if size_ms <= 0:
            raise ValueError(f"window size must be positive, got {size_ms} ms")
        self.size_ms, self.concat = size_ms, concat
        self.partitions = list(partitions)
        self.resume_ms = resume_ms
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
        """Add a partition's block (in offset order) with the offset of each example's record
        and its label time."""
        if not len(times):
            return
        if self.start_ms is None:
            self.start_ms = self._start(int(times[0]))
        past = np.flatnonzero(times >= self.end_ms)
        if self.later[partition]:
            cut = 0
        elif past.size:  # the first example of the record that holds the first one past the end
            cut = int(np.searchsorted(offsets, offsets[past[0]]))
        else:
            cut = len(times)
        if cut:  # before that record, the partition is in this window
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
        """True when every partition has passed the window's end or has nothing left to read.

        A window left with no example (every partition's first record held one past its end) is
        skipped: its examples are in the next one."""
        if self.start_ms is None:
            return False
        passed = all(self.later[p] or p in caught_up for p in self.partitions)
        while passed and not (self.rows or self.taken) and any(self.later.values()):
            self._move_on()
            passed = all(self.later[p] or p in caught_up for p in self.partitions)
        return passed and bool(self.rows or self.taken)

    def close(self, positions: dict[int, int]) -> tuple[object, dict[int, int]]:
        """The window's examples not yet taken (None if none) and its end offsets
        (``positions``: each partition's next offset to read); later ones start the next window."""
        block = self.concat(self.current) if self.current else None
        ends = {
            p: (int(self.later[p][0][0][0]) if self.later[p] else positions[p])
            for p in self.partitions
        }
        self._move_on()
        return block, ends

    def _start(self, first_ms: int) -> int:
        start = first_ms - first_ms % self.size_ms
        return start if self.resume_ms is None else max(self.resume_ms, start)

    def _move_on(self) -> None:
        """Open the window after this one with the examples read past its end. A late example
        (label time before it) read after its partition passed the end goes into it."""
        later, self.resume_ms = self.later, self.end_ms
        self.current, self.rows, self.taken = [], 0, 0
        self.later = {p: [] for p in self.partitions}
        first = min(
            (int(times.min()) for items in later.values() for _, times, _ in items), default=None
        )
        self.start_ms = None if first is None else self._start(first)
        for p, items in later.items():
            for offsets, times, rest in items:
                self.add(p, offsets, times, rest)


class QuietPartitions:
    """Partitions with nothing new to read for ``after_s`` seconds running: only those may
    close a window without an example past its end.

    >>> quiet = QuietPartitions(after_s=30)
    >>> quiet.update(caught_up={0, 1}, now=0.0), quiet.update(caught_up={0, 1}, now=31.0)
    (set(), {0, 1})
    >>> quiet.read(0); quiet.update(caught_up={0, 1}, now=32.0)
    {1}
    """

    def __init__(self, after_s: float):
        self.after_s = after_s
        self.since: dict[int, float] = {}  #: partition -> when it was last seen caught up first

    def read(self, partition: int) -> None:
        """The partition gave examples: it is not quiet."""
        self.since.pop(partition, None)

    def update(self, caught_up: set[int], now: float) -> set[int]:
        for p in caught_up:
            self.since.setdefault(p, now)
        return {p for p in caught_up if now - self.since[p] >= self.after_s}
