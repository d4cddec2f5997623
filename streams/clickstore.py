"""Click states stored many to a table value: one changelog record per step and partition for
the clicks a step starts, instead of one per click.

Faust sends a changelog record for every table write, and that send (a future, the producer
buffer, aiokafka's accumulator) costs more than the rest of a click's processing. So a click
state is kept in two parts:

- its **click part** (the click, its label, where it was read, ``closed``) in a *bundle*: the
  clicks that one step started in one partition, at most ``BUNDLE_CLICKS``, under one key
  (``b:<partition>:<offset>:<line>`` of its first click). A step that changes any click of a
  bundle writes the bundle once; its clicks are labeled and closed at about the same
  watermark, so a bundle is written a few times in its life, not once per click and transition;
- its **conversion part** (the conversion, whether it was attributed, where it was read) under
  ``c:<click id>``, for the few clicks with a conversion and for orphan conversions (whose whole
  state lives there until their click comes).

Both live in one table, so in one changelog partition, where a crash can lose only a suffix of
the writes; a step writes its conversion parts before its bundles and deletes them after. A
state is then never torn the one way that loses a label: a bundle delivered while the
conversion part written with it is lost (the click's record would be read again as a replay,
and the conversion, read before as an orphan and committed, never again). The other way, a
conversion part whose bundle is lost, is an orphan that its click, read again, attributes as
it did the first time. (A conversion part left by a crash between the two writes of a deletion
is an orphan too: it expires as one, counted ``orphan_expired``, and would attribute a click
reusing the id before then.)

``get`` returns the state the two parts make (the state ``streams.attribution`` works on), so
the attribution step does not know how states are stored. In memory: which bundle holds each
click id (``index``) and which click ids have a conversion part (``with_conversion``), rebuilt
from the tables after every (re)assignment (``rebuild``).

>>> table = {}
>>> store = ClickStore(table)
>>> def apply(writes):  # as the worker does, into its table
...     for key, value, _ in writes:
...         table[key] = value
...     return [key for key, _, _ in writes]
>>> def click(i):
...     return {"click": {"event_id": f"c{i}"}, "conv": None, "label": None, "p": 0,
...             "src": {"click": ["clicks", 0, 7, i]}}
>>> apply(store.write([("c0", click(0), "e"), ("c1", click(1), "e")]))  # one bundle
['b:0:7:0']
>>> state = dict(store.get("c1"), conv={"event_id": "v1", "ts_ms": 9}, attributed=True)
>>> state["src"] = dict(state["src"], conv=["conversions", 0, 3, 0])
>>> apply(store.write([("c1", state, "e")]))  # the click part is unchanged
['c:c1']
>>> store.get("c1") == state, sorted(table["c:c1"])
(True, ['attributed', 'conv', 'p', 'src'])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

#: Clicks a bundle holds at most (about 0.5 KB each: a bundle stays well under a Kafka record's
#: default size limit of 1 MB; the changelog topic allows 8 MB for clicks with many features).
BUNDLE_CLICKS = 500
#: The fields of a state that belong to its conversion part (``src`` is split by key).
CONVERSION_FIELDS = ("conv", "attributed", "delta_src")

#: A table write: (key, value or None to delete, where)
Write = tuple[str, Any, Any]


def split(state: dict) -> tuple[dict | None, dict | None]:
    """A state's click part and conversion part (None where it has none).

    >>> split({"click": None, "conv": {"ts_ms": 1}, "label": None, "p": 2, "src": {}})
    (None, {'click': None, 'conv': {'ts_ms': 1}, 'label': None, 'p': 2, 'src': {}})
    """
    if state.get("click") is None:
        return None, state
    src = state.get("src", {})
    click = {k: v for k, v in state.items() if k not in CONVERSION_FIELDS and k != "src"}
    click["src"] = {k: v for k, v in src.items() if k != "conv"}
    if state.get("conv") is None:
        return click, None
    conversion = {k: state[k] for k in (*CONVERSION_FIELDS, "p") if k in state}
    conversion["src"] = {k: v for k, v in src.items() if k == "conv"}
    return click, conversion


def merge(click: dict | None, conversion: dict | None) -> dict | None:
    """The state two parts make (the inverse of :func:`split`). A conversion part alone is an
    orphan's state (or one whose bundle a crash lost: its click, read again, attributes it)."""
    if click is None:
        return None if conversion is None else {"click": None, "label": None} | conversion
    if conversion is None:
        return click | {"conv": None}
    src = click.get("src", {}) | conversion.get("src", {})
    return click | conversion | {"src": src}


class ClickStore:
    """Click states by click id over a table of bundles and conversion parts (any mapping: a
    Faust table in the worker, a dict in tests)."""

    def __init__(self, table: MutableMapping):
        self.table = table
        self.index: dict[str, str] = {}  #: click id -> the key of the bundle holding it
        self.with_conversion: set[str] = set()
        self._cache: dict[str, dict] = {}  #: bundles read or written in the current step
        self._parts: dict[str, dict | None] = {}  #: conversion parts read in the current step

    def rebuild(self) -> None:
        """Index the tables as they are now (after an assignment or a restore)."""
        self.index, self.with_conversion, self._cache, self._parts = {}, set(), {}, {}
        for key, value in self.table.items():
            if key.startswith("b:"):
                for click_id in value["clicks"]:
                    self.index[click_id] = key
            else:
                self.with_conversion.add(key[2:])

    def _bundle(self, key: str) -> dict:
        """The bundle under ``key``, read once a step (a copy: it changes only when written)."""
        bundle = self._cache.get(key)
        if bundle is None:
            stored = self.table[key]
            bundle = self._cache[key] = {"p": stored["p"], "clicks": dict(stored["clicks"])}
        return bundle

    def _conversion(self, click_id: str) -> dict | None:
        """The click's conversion part, read once a step: in the step, where the worker reads
        in the click's partition, not again in ``write`` (which runs after the step)."""
        if click_id not in self.with_conversion:
            return None
        if click_id not in self._parts:
            self._parts[click_id] = self.table.get("c:" + click_id)
        return self._parts[click_id]

    def get(self, click_id: str) -> dict | None:
        key = self.index.get(click_id)
        click = self._bundle(key)["clicks"][click_id] if key is not None else None
        return merge(click, self._conversion(click_id))

    def items(self) -> Iterator[tuple[str, dict]]:
        """Every (click id, state) as indexed (``rebuild``): clicks, then orphans. (Conversion
        parts are taken from the same scan, not read one by one.)"""
        bundles, parts = [], {}
        for key, value in self.table.items():
            if key.startswith("b:"):
                bundles.append(value)
            else:
                parts[key[2:]] = value
        for bundle in bundles:
            for click_id, click in bundle["clicks"].items():
                yield click_id, merge(click, parts.pop(click_id, None))
        yield from parts.items()

    def __len__(self) -> int:
        return len(self.index) + sum(1 for k in self.with_conversion if k not in self.index)

    def write(self, writes: Iterable[tuple[str, dict | None, Any]]) -> list[Write]:
        """The table writes that store a step's (click id, state or None, where) writes, in
        order: the conversion parts that changed, each changed bundle once (new clicks in new
        bundles of their partition), then the conversion parts deleted (a state is deleted
        bundle first). The bundles and parts read in the step are forgotten after it."""
        out, deletes = [], []
        dirty: dict[str, Any] = {}  #: bundle key -> where
        filling: dict[int, str] = {}  #: partition -> its new bundle in this step
        for click_id, state, where in writes:
            click, conversion = split(state) if state is not None else (None, None)
            key = self.index.get(click_id)
            if key is not None and click is None:  # deleted
                del self._bundle(key)["clicks"][click_id]
                del self.index[click_id]
                dirty[key] = where
            elif click is not None:
                if key is None:
                    key = filling.get(click["p"])
                    if key is None or len(self._cache[key]["clicks"]) >= BUNDLE_CLICKS:
                        src = click["src"]["click"]
                        key = filling[click["p"]] = f"b:{click['p']}:{src[2]}:{src[3]}"
                        self._cache[key] = {"p": click["p"], "clicks": {}}
                    self.index[click_id] = key
                clicks = self._bundle(key)["clicks"]
                if clicks.get(click_id) != click:
                    clicks[click_id] = click
                    dirty[key] = where
            if conversion is None and click_id in self.with_conversion:
                self.with_conversion.discard(click_id)
                deletes.append(("c:" + click_id, None, where))
            elif conversion is not None and conversion != self._conversion(click_id):
                self.with_conversion.add(click_id)
                out.append(("c:" + click_id, conversion, where))
        for key, where in dirty.items():
            bundle = self._cache[key]
            out.append((key, bundle if bundle["clicks"] else None, where))
        self._cache, self._parts = {}, {}
        return out + deletes
