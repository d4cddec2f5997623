"""One agent step: the table writes and outputs of a batch of events, held until its end.

Faust sends a changelog record for every table write and a Kafka record for every output, and
each costs about as much as reading an event. A step reads through this buffer and, at its end,
writes each key it changed once, sends the labels of each partition in order (many a record)
after the states that caused them, and sends each setup's CVR deltas as one message. The worker
does all of it before the step's events are acknowledged, so a committed offset never passes a
write that was not sent.

>>> table = {"a": 1}
>>> step = Step(table.get)
>>> step.put("a", 2, where="p0"); step.put("b", 3, where="p1"); step.delete("a", where="p0")
>>> step.get("a"), step.get("b"), step.get("c")
(None, 3, None)
>>> step.delta("s1", {"offset": 7}); step.delta("s1", {"offset": 8})
>>> [(key, value) for key, value, _ in step.writes()], [len(d) for d in step.deltas.values()]
([('a', None), ('b', 3)], [2])
>>> step.label(1, {"click_id": "c1"}); step.label(0, {"click_id": "c2"}); step.label(1, {})
>>> {p: len(labels) for p, labels in step.labels.items()}
{1: 2, 0: 1}
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

_ABSENT = object()


class Step:
    """Reads through to ``read`` (the table's ``get``); keeps the last write of each key, where
    it was made (the event whose partition it belongs to), the labels by partition and the
    deltas."""

    def __init__(self, read: Callable[[Any], Any]):
        self.read = read
        self._writes: dict[Any, tuple[Any, Any]] = {}  #: key -> (value or None, where)
        self.labels: dict[int, list[dict]] = {}  #: partition -> its labeled examples, in order
        self.deltas: dict[str, list[dict]] = {}  #: setup id -> its deltas, in order
        #: partition -> where (as in ``put``): the partitions whose watermarks the step
        #: changed, saved at its end
        self.watermarks: dict[int, Any] = {}

    def get(self, key):
        value, _ = self._writes.get(key, (_ABSENT, None))
        return self.read(key) if value is _ABSENT else value

    def put(self, key, value, where) -> None:
        self._writes[key] = (value, where)

    def delete(self, key, where) -> None:
        self._writes[key] = (None, where)

    def label(self, partition: int, example: dict) -> None:
        self.labels.setdefault(partition, []).append(example)

    def delta(self, setup_id: str, delta: dict) -> None:
        self.deltas.setdefault(setup_id, []).append(delta)

    def writes(self) -> Iterator[tuple[Any, Any, Any]]:
        """(key, value or None to delete, where) of every key written, once each."""
        for key, (value, where) in self._writes.items():
            yield key, value, where
