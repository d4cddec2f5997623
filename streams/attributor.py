"""The attribution step: the events of source records applied to a ``Step``, each in order,
with its partition's watermark advanced and its expired clicks closed after it.

It holds what the ``attribute`` agent keeps between steps (per partition: the watermark and
the expiry heap; per stream and partition: the last offset applied) and knows nothing of Faust:
records come in as (stream, partition, offset, value) and the states are read through the step,
so it runs on a dict as well as on a table.

>>> from streams.attribution import Rules
>>> rules = Rules(window_ms=100, allowed_lateness_ms=0)
>>> table, attributor = {}, Attributor(rules)
>>> def click(i, ts):
...     return (f'{{"event_id": "c{i}", "ts_ms": {ts}, "setup_id": "s", "advertiser_id": "a", '
...             f'"features": {{}}}}').encode()
>>> def conversion(i, ts):
...     return (f'{{"event_id": "v{i}", "click_id": "c{i}", "setup_id": "s", '
...             f'"ts_ms": {ts}}}').encode()
>>> step, committed = Step(table.get), lambda kind, partition: 0
>>> record = b"\\n".join([click(1, 10), b"not json", click(2, 300)])
>>> applied, dead = attributor.record(step, "clicks", 0, 0, record, "here", committed)
>>> applied, [(line, error.reason) for line, _, error in dead]
(2, [(1, 'click.<event>')])
>>> attributor.record(step, "conversions", 0, 0, conversion(1, 40), "here", committed)
(1, [])
>>> step.labels  # the watermark is min(300, 40): c1's window is open
{}
>>> attributor.record(step, "conversions", 0, 1, conversion(2, 320), "here", committed)
(1, [])
>>> [(example["click_id"], example["label"]) for example in step.labels[0]]
[('c1', 1)]
>>> [(delta["kind"], delta["ts_ms"]) for delta in step.deltas["s"]]
[('click', 10), ('click', 300), ('conversion', 40), ('conversion', 320)]
"""

from __future__ import annotations

from collections.abc import Callable

from rarecvr.contracts import Click, ContractError, Conversion, decode, split_lines
from streams import metrics
from streams.attribution import (
    STREAMS,
    Count,
    CvrDelta,
    Label,
    Rules,
    apply_event,
)
from streams.expiry import Expiry
from streams.recovery import Recovered
from streams.step import Step
from streams.watermark import Watermark

#: Lines a record may hold, for the CVR deltas' offsets (``delta_offset``).
LINES_PER_RECORD = 1 << 20

#: A malformed line: (line in its record, its bytes, the error)
DeadLine = tuple[int, bytes, ContractError]


def delta_offset(source: list) -> int:
    """What orders the CVR deltas of one source partition: the record's offset, then the
    event's line in it.

    >>> delta_offset(["clicks", 0, 7, 0]) < delta_offset(["clicks", 0, 7, 3]) < delta_offset(
    ...     ["clicks", 0, 8, 0])
    True
    """
    return source[2] * LINES_PER_RECORD + source[3]


def delta_entry(effect: CvrDelta, source: str, offset: int) -> dict:
    """One CVR delta; ``source`` and ``offset`` (of the event that caused it) make it unique."""
    return {
        "kind": effect.kind,
        "ts_ms": effect.ts_ms,
        "delay_ms": effect.delay_ms,
        "source": source,
        "offset": offset,
        "group": effect.group,
    }


class Attributor:
    """Applies source records to steps; keeps each partition's watermark and expiry."""

    def __init__(self, rules: Rules):
        self.rules = rules
        self.watermarks: dict[int, Watermark] = {}
        self.expiry = Expiry(rules)
        #: (stream, partition) -> the last offset this process applied: its local tables are
        #: current up to there, whatever the committed offsets say
        self.applied: dict[tuple[str, int], int] = {}

    def restore(self, recovered: Recovered, step: Step) -> None:
        """Start again from what ``streams.recovery`` rebuilt; its labels go out in ``step``."""
        self.watermarks, self.expiry = recovered.watermarks, recovered.expiry
        for p, example in recovered.resend:
            step.label(p, example)
            metrics.OUTCOMES.labels("label_resent_after_restart").inc()

    def record(
        self,
        step: Step,
        kind: str,
        p: int,
        offset: int,
        value: bytes,
        where,
        committed: Callable[[str, int], int],
    ) -> tuple[int, list[DeadLine]]:
        """Apply each event (line) of the ``kind`` record at (``p``, ``offset``) to the step;
        return how many were applied and the malformed lines. ``where`` goes with the step's
        writes (the record, whose partition they belong to); ``committed(kind, partition)``
        is the next offset to read of each stream."""
        wm = self.watermarks.setdefault(p, Watermark(STREAMS, self.rules.allowed_lateness_ms))
        applied, dead, line = 0, [], 0
        for line, raw in enumerate(split_lines(value or b"") or [value or b""]):
            try:
                parsed = decode(Click if kind == "clicks" else Conversion, raw)
            except ContractError as error:
                dead.append((line, raw, error))
                continue
            self._event(step, wm, [kind, p, offset, line], parsed, where, committed)
            applied += 1
        if wm.record_read(kind, offset):  # a restored watermark's hold ended
            self._expire(step, wm, [kind, p, offset, line], where, committed)
        # Saved whether or not its value moved: the latest time of a stream that is not the
        # slowest changes it too, and a record committed must not be needed to rebuild it.
        step.watermarks[p] = where
        self.applied[kind, p] = offset
        return applied, dead

    def _event(self, step: Step, wm: Watermark, source: list, parsed, where, committed) -> None:
        kind, p = source[0], source[1]
        if wm.is_late(kind, parsed.ts_ms):
            metrics.LATE.labels(kind).inc()
        key = parsed.event_id if kind == "clicks" else parsed.click_id
        old = step.get(key)
        new, effects, replayed = apply_event(old, kind, parsed.model_dump(), source, self.rules)
        if replayed:
            metrics.OUTCOMES.labels("replayed_after_restart").inc()
        elif new is not old:
            new["p"] = p
            step.put(key, new, where)
            self.expiry.track(p, key, new)
        self._collect(step, effects, source)
        if wm.observe(kind, parsed.ts_ms, source[2]):
            self._expire(step, wm, source, where, committed)
            delay = max(wm.latest.values()) - wm.value
            metrics.WATERMARK_DELAY.labels(str(p)).set(delay / 1000)

    def _expire(self, step: Step, wm: Watermark, source: list, where, committed) -> None:
        p = source[1]
        effects = self.expiry.expire(step, p, wm.value, wm.offsets, source, where, committed)
        self._collect(step, effects, source)
        metrics.PENDING.labels(str(p)).set(self.expiry.pending(p))

    def _collect(self, step: Step, effects: list, source: list) -> None:
        """Hold the effects of the event read at ``source`` in the step: labels and CVR deltas
        to send, counts."""
        kind, p = source[0], source[1]
        for effect in effects:
            if isinstance(effect, Label):
                step.label(p, effect.example)
            elif isinstance(effect, CvrDelta):
                step.delta(
                    effect.setup_id,
                    delta_entry(effect, f"{kind}:{p}:{effect.kind}", delta_offset(source)),
                )
            elif isinstance(effect, Count):
                metrics.OUTCOMES.labels(effect.name).inc()
