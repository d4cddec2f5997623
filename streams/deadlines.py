"""The open clicks' deadlines, in deadline order, on disk (RocksDB), so a worker's memory does
not grow with its open clicks.

A local index of the worker, not a table: it holds, per source partition, when each state has
something to do (``streams.attribution.deadline``) and is rebuilt from the click-state table
after every (re)assignment, as the in-memory heap it replaces was (156 bytes an open click, about
1.5 GB for 10 million). Keys are ``partition (2 bytes) | deadline (8 bytes) | click id``, big
endian, so RocksDB's key order is the expiry order of each partition.

>>> import tempfile
>>> d = Deadlines(Path(tempfile.mkdtemp()) / "deadlines")
>>> d.push(0, 30, "c2"); d.push(0, 10, "c1"); d.push(1, 5, "c9"); d.push(0, 10, "c1")
>>> d.pending(0), d.pop_due(0, 20), d.pending(0), d.pop_due(0, 20), d.pop_due(1, 99)
(2, [(10, 'c1')], 1, [], [(5, 'c9')])
>>> d.close()
"""

from __future__ import annotations

import shutil
import struct
from collections import Counter
from pathlib import Path

from rocksdict import Options, Rdict

_PREFIX = struct.Struct(">HQ")


class Deadlines:
    """(deadline, click id) entries per partition, popped in deadline order."""

    def __init__(self, path: Path):
        shutil.rmtree(path, ignore_errors=True)  # an index of the tables: rebuilt, never restored
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = Rdict(str(path), options=Options(raw_mode=True))
        self.counts: Counter = Counter()

    def push(self, partition: int, due: int, key: str) -> None:
        """Note that ``key`` has something to do once the watermark reaches ``due``."""
        entry = _PREFIX.pack(partition, max(due, 0)) + key.encode()
        if self.db.get(entry) is None:
            self.db[entry] = b""
            self.counts[partition] += 1

    def pop_due(self, partition: int, watermark: int) -> list[tuple[int, str]]:
        """Remove and return the partition's entries due at ``watermark``, earliest first."""
        it = self.db.iter()
        it.seek(_PREFIX.pack(partition, 0))
        found = []
        while it.valid():
            entry = it.key()
            p, due = _PREFIX.unpack_from(entry)
            if p != partition or due > watermark:
                break
            found.append((entry, due, entry[_PREFIX.size :].decode()))
            it.next()
        del it
        for entry, _, _ in found:
            del self.db[entry]
        self.counts[partition] -= len(found)
        return [(due, key) for _, due, key in found]

    def pending(self, partition: int) -> int:
        return self.counts[partition]

    def clear(self) -> None:
        """Forget every entry (the worker rebuilds them from the tables)."""
        self.db.close()
        Rdict.destroy(str(self.path))
        self.db = Rdict(str(self.path), options=Options(raw_mode=True))
        self.counts.clear()

    def close(self) -> None:
        self.db.close()
