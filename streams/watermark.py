"""The event-time watermark of one partition, and how it resumes after a crash.

A partition is fed by several streams (clicks, conversions). Its watermark is the minimum over
the streams of their latest event time, less the allowed lateness, and never goes back; until
every stream has been seen it is -1.

The watermark is saved with the offsets of the records it reflects. After a crash the saved
copy can be ahead of the other tables: its changelog record was delivered, theirs (for records
past the last committed offset) were not. Expiring clicks with it before those records are read
again would label a click negative while its conversion is still to be re-read. So a restored
watermark *holds*: it expires nothing until every stream has been read back to the end of the
record it had reached.

>>> wm = Watermark(("clicks", "conversions"), lateness_ms=10)
>>> wm.observe("clicks", 100, offset=0), wm.observe("conversions", 80, offset=0)
(False, True)
>>> wm.value
70
>>> saved = wm.saved()
>>> resumed = Watermark.restore(saved, ("clicks", "conversions"), 10,
...                             resume_at={"clicks": 0, "conversions": 0})
>>> resumed.value, resumed.held
(70, True)
>>> resumed.observe("clicks", 100, offset=0), resumed.record_read("clicks", 0)  # not yet
(False, False)
>>> resumed.observe("conversions", 80, offset=0)  # a line of the record: it may hold more
False
>>> resumed.record_read("conversions", 0)  # the hold ends: clicks may expire now
True
"""

from __future__ import annotations


class Watermark:
    """The watermark of one partition: per stream, the latest event time and its offset."""

    def __init__(self, streams: tuple[str, ...], lateness_ms: int, latest: dict | None = None):
        self.lateness_ms = lateness_ms
        self.latest = {s: -1 for s in streams} | (latest or {})
        self.offsets = {s: -1 for s in streams}
        #: stream -> offset to read back to before anything may expire (after a restore)
        self.hold: dict[str, int] = {}

    def observe(self, stream: str, ts_ms: int, offset: int = -1) -> bool:
        """Record an event of the record at ``offset``; True when the watermark moved (and is
        not held): clicks may have expired."""
        before = self.value
        if ts_ms > self.latest[stream]:
            self.latest[stream] = ts_ms
        self.offsets[stream] = max(self.offsets[stream], offset)
        return not self.hold and self.value > before

    def record_read(self, stream: str, offset: int) -> bool:
        """Note that every event of the record at ``offset`` was read; True when that ended a
        hold (clicks may have expired). A hold ends at the end of its record, not at its first
        event: the saved watermark reflects all the events of the record."""
        if self.hold and offset >= self.hold.get(stream, offset + 1):
            del self.hold[stream]
            return not self.hold
        return False

    @property
    def held(self) -> bool:
        return bool(self.hold)

    def is_late(self, stream: str, ts_ms: int) -> bool:
        """Whether an event arrives after its own stream moved past it by more than allowed."""
        return ts_ms < self.latest[stream] - self.lateness_ms

    @property
    def value(self) -> int:
        lowest = min(self.latest.values())
        return -1 if lowest < 0 else lowest - self.lateness_ms

    def saved(self) -> dict:
        """What the watermarks table keeps (a copy: the changelog send serialises it later)."""
        return {"latest": dict(self.latest), "offsets": dict(self.offsets)}

    @classmethod
    def restore(
        cls,
        saved: dict,
        streams: tuple[str, ...],
        lateness_ms: int,
        resume_at: dict[str, int | None],
    ) -> Watermark:
        """A saved watermark, held until each stream is read back to its saved offset.

        ``resume_at`` is, per stream, the first offset whose effects the tables may lack (the
        committed offset, or past what this process applied itself when it kept the partition;
        None or 0 when it starts over). A stream whose saved offset is before it needs no hold:
        the tables already reflect those records (and a kept partition may have no record
        left to read back).
        """
        wm = cls(streams, lateness_ms, saved["latest"])
        wm.offsets |= saved["offsets"]
        wm.hold = {s: o for s, o in wm.offsets.items() if o >= 0 and o >= (resume_at.get(s) or 0)}
        return wm
