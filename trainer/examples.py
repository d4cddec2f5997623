"""Labeled examples as columns: the records of one fetch parsed together, never a dict each.

A record of the labeled-examples topic holds one or more examples, one JSON object a line (the
worker sends a step's labels together: one Kafka record per example cost the trainer's reader
about as much again as parsing it).

On 2 cores, reading competes with training for the CPU: as one Python dict per record (JSON,
checks, feature arrays, task lookups) reading cost about 40 us a record beside training. Here a
fetch's values are joined and parsed by Arrow's JSON reader in one call, and every later step
(window cuts, label times, task lookups, model inputs) works on whole columns.

A block that Arrow cannot read as one table (a malformed line, a field whose type changes from
line to line) is parsed line by line instead, with the same result: each bad line is named
with its record and reason, the rest become columns exactly as ``rarecvr.schema.encode_records``
would make them (the replicas' path), so training and serving hash the same strings.

>>> from rarecvr.schema import FeatureSchema
>>> spec = FeatureSchema(("setup_id", "device", "hour"), ("recency_days",))
>>> values = [
...     b'{"click_id": "c1", "setup_id": "s1", "label": 1, "click_ts_ms": 5,'
...     b' "conversion_ts_ms": 9, "features": {"device": "ios", "hour": 3, "recency_days": 2.5}}',
...     b'{"click_id": "c2", "setup_id": "s2", "label": 0, "click_ts_ms": 7,'
...     b' "features": {"device": "web", "hour": 4}}',
... ]
>>> block, records, bad = parse([values[0] + b"\\n" + values[1]], spec)  # one record, two lines
>>> len(block), records.tolist(), bad, block.inputs["hour"].tolist()
(2, [0, 0], [], [b'3', b'4'])
>>> block.inputs["recency_days"].tolist(), block.label_time(attribution_window_ms=100).tolist()
([2.5, 0.0], [105, 107])
>>> block, records, bad = parse([values[0], b'{"click_id": "c3"}\\nnot json', b"[1]"], spec)
>>> len(block), records.tolist()
(1, [0])
>>> [(i, line, reason) for i, line, reason, _ in bad]  # doctest: +NORMALIZE_WHITESPACE
[(1, b'{"click_id": "c3"}', 'labeled_example.setup_id'), (1, b'not json', 'not_json'),
 (2, b'[1]', 'not_json')]
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from rarecvr.contracts import PEER_TAGS, peer_group, split_lines
from rarecvr.schema import EncodingError, FeatureSchema, encode_records, number, word

REQUIRED = ("click_id", "setup_id", "features", "label", "click_ts_ms")
#: Top-level fields read by name; anything else in a record is ignored.
TOP = pa.schema(
    [
        ("click_id", pa.string()),
        ("setup_id", pa.string()),
        ("advertiser_id", pa.string()),
        ("label", pa.int64()),
        ("click_ts_ms", pa.int64()),
        ("conversion_ts_ms", pa.int64()),
        ("true_p", pa.float64()),
    ]
)
_OPTIONS = pj.ParseOptions(explicit_schema=TOP, unexpected_field_behavior="infer")
#: Parse in the calling thread (the trainer's reader, at its lower priority): training has the
#: cores, and Arrow's own threads would compete with it at full priority.
_READ = pj.ReadOptions(use_threads=False)
NO_CONVERSION = -1


@dataclass(frozen=True)
class Examples:
    """A block of labeled examples: model inputs and, row for row, what the trainer needs."""

    inputs: dict[str, np.ndarray]  #: bytes for categorical features, float32 for numeric
    #: setup_id (str), group (peer group, bytes), label, click/conversion ms, true_p
    meta: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.meta["label"])

    def take(self, rows: np.ndarray) -> Examples:
        """The rows at these indices, in that order."""
        return Examples(
            {k: v[rows] for k, v in self.inputs.items()}, {k: v[rows] for k, v in self.meta.items()}
        )

    @staticmethod
    def concat(blocks: list[Examples]) -> Examples:
        if len(blocks) == 1:
            return blocks[0]
        inputs = {k: np.concatenate([b.inputs[k] for b in blocks]) for k in blocks[0].inputs}
        meta = {k: np.concatenate([b.meta[k] for b in blocks]) for k in blocks[0].meta}
        return Examples(inputs, meta)

    def label_time(self, attribution_window_ms: int) -> np.ndarray:
        """When each label became final (event time): the close of its click's attribution
        window, for positives as for negatives (the worker sends both then), so a span of label
        time is a cohort of clicks with the population's conversion rate."""
        return self.meta["click_ts_ms"] + attribution_window_ms

    def hard(self, assignments) -> np.ndarray:
        """Whether each example's setup was hard at its click time, by ``hard_as_of`` of an
        assignment reader or view: one lookup per setup, not per example."""
        setups, which = _distinct(self.meta["setup_id"])
        order = np.argsort(which, kind="stable")  # each setup's rows together, in row order
        bounds = np.searchsorted(which[order], np.arange(len(setups) + 1))
        clicks, groups = self.meta["click_ts_ms"], self.meta["group"]
        hard = np.zeros(len(self), dtype=bool)
        for k, setup in enumerate(setups):
            rows = order[bounds[k] : bounds[k + 1]]
            hard[rows] = assignments.hard_as_of(setup, clicks[rows], groups[rows[0]].decode())
        return hard

    @classmethod
    def from_dicts(cls, examples: list[dict], spec: FeatureSchema) -> Examples:
        """Columns from parsed examples, as the replicas turn requests into inputs."""
        records = [
            e["features"] | {"setup_id": e["setup_id"], "advertiser_id": e.get("advertiser_id", "")}
            for e in examples
        ]
        meta = {
            "setup_id": np.array([e["setup_id"] for e in examples], dtype=object),
            "group": np.array([peer_group(e["features"]).encode() for e in examples], object),
            "label": np.array([e["label"] for e in examples], dtype=np.int8),
            "click_ts_ms": np.array([e["click_ts_ms"] for e in examples], dtype=np.int64),
            "conversion_ts_ms": np.array(
                [_or(e.get("conversion_ts_ms"), NO_CONVERSION) for e in examples], np.int64
            ),
            "true_p": np.array([_or(e.get("true_p"), np.nan) for e in examples], np.float64),
        }
        return cls(encode_records(records, spec), meta)


def _distinct(values: np.ndarray) -> tuple[list, np.ndarray]:
    """The distinct values in order of first appearance and each row's index among them.

    A dict, not ``np.unique``: sorting an array of Python strings costs ten times as much
    (half the trainer's own work on a window's main thread, measured).

    >>> _distinct(np.array(["b", "a", "b"], dtype=object))
    (['b', 'a'], array([0, 1, 0]))
    """
    index: dict = {}
    which = np.fromiter((index.setdefault(v, len(index)) for v in values), np.int64, len(values))
    return list(index), which


def _or(value, default):
    return default if value is None else value


class Parsed(NamedTuple):
    """A fetch's records parsed: the valid examples as columns, the record each row came from
    (its index in the fetch), and (record index, line, reason, detail) of each bad line."""

    examples: Examples
    records: np.ndarray
    bad: list[tuple[int, bytes, str, str]]


def parse(values: list[bytes], spec: FeatureSchema) -> Parsed:
    """The examples of a fetch's records, each record one or more lines of JSON."""
    lines = np.array([value.count(b"\n") + 1 for value in values], dtype=np.int64)
    table = _read_table(values, int(lines.sum()), spec) if values else None
    if table is not None:
        return Parsed(_from_table(table, spec), np.repeat(np.arange(len(values)), lines), [])
    good, records, bad = [], [], []
    for i, value in enumerate(values):
        events = split_lines(value)
        if not events:
            bad.append((i, value, "not_json", "an empty record"))
        for line in events:
            try:
                good.append(check(orjson.loads(line), spec))
                records.append(i)
            except orjson.JSONDecodeError as error:
                bad.append((i, line, "not_json", str(error)))
            except ValueError as error:
                reason, _, detail = str(error).partition(": ")
                bad.append((i, line, reason, detail))
    return Parsed(Examples.from_dicts(good, spec), np.array(records, dtype=np.int64), bad)


def check(example, spec: FeatureSchema) -> dict:
    """The example if it has what training needs; else ValueError("<field>: <problem>")."""
    if not isinstance(example, dict):
        raise ValueError("not_json: not a JSON object")
    for key in REQUIRED:
        if key not in example or example[key] is None:
            raise ValueError(f"labeled_example.{key}: missing")
    if example["label"] not in (0, 1) or isinstance(example["label"], bool):
        raise ValueError(f"labeled_example.label: must be 0 or 1, got {example['label']!r}")
    for key in ("click_ts_ms", "conversion_ts_ms"):
        if example.get(key) is not None and not isinstance(example[key], int):
            raise ValueError(f"labeled_example.{key}: must be an integer")
    features = example["features"]
    if not isinstance(features, dict):
        raise ValueError("labeled_example.features: must be an object")
    for name in spec.numeric:
        try:
            number(features.get(name), 0, name)
        except EncodingError as error:
            raise ValueError(f"labeled_example.features.{name}: {error.problem}") from None
    return example


def _read_table(values: list[bytes], lines: int, spec: FeatureSchema) -> pa.Table | None:
    """All ``lines`` of the values as one Arrow table, or None when any needs a closer look."""
    try:
        table = pj.read_json(
            io.BytesIO(b"\n".join(values)), read_options=_READ, parse_options=_OPTIONS
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != lines or "features" not in table.column_names:
        return None  # a blank line, or an empty record
    features = table.schema.field("features").type
    if not pa.types.is_struct(features) or any(table[key].null_count for key in REQUIRED):
        return None
    numeric = {f.name: f.type for f in features if f.name in spec.numeric}
    if not all(
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)
        for t in numeric.values()
    ):
        return None
    labels = table["label"]
    if pc.any(pc.invert(pc.is_in(labels, pa.array([0, 1])))).as_py():
        return None
    return table


def _from_table(table: pa.Table, spec: FeatureSchema) -> Examples:
    features = table["features"].combine_chunks()
    names = {f.name for f in features.type}

    def column(name: str) -> pa.Array | None:
        if name in ("setup_id", "advertiser_id") and name in table.column_names:
            return table[name].combine_chunks()
        return features.field(name) if name in names else None

    n = table.num_rows
    inputs = {name: _as_bytes(column(name), n) for name in spec.categorical}
    for name in spec.numeric:
        values = column(name)
        inputs[name] = (
            np.zeros(n, np.float32)
            if values is None
            else pc.cast(values, pa.float32()).fill_null(0.0).to_numpy()
        )
    groups = [_as_bytes(column(tag), n) for tag in PEER_TAGS]
    meta = {
        "setup_id": table["setup_id"].to_numpy(),
        "group": functools.reduce(lambda a, b: a + b"/" + b, groups),  # as ``peer_group``
        "label": table["label"].to_numpy().astype(np.int8),
        "click_ts_ms": table["click_ts_ms"].to_numpy(),
        "conversion_ts_ms": table["conversion_ts_ms"].fill_null(NO_CONVERSION).to_numpy(),
        "true_p": table["true_p"].to_numpy(zero_copy_only=False).astype(np.float64),
    }
    return Examples(inputs, meta)


def _as_bytes(values: pa.Array | None, n: int) -> np.ndarray:
    """A categorical column as ``schema.word(value).encode()`` of each value ("" when
    missing), built from its distinct values; strings and integers are cast by Arrow, anything
    else goes through ``word``."""
    if values is None:
        return np.full(n, b"", dtype=object)
    if not (pa.types.is_string(values.type) or pa.types.is_integer(values.type)):
        return np.array([word(v).encode() for v in values.to_pylist()], dtype=object)
    encoded = pc.cast(values, pa.string()).fill_null("").dictionary_encode()
    words = np.array([w.encode() for w in encoded.dictionary.to_pylist()], dtype=object)
    return words[encoded.indices.to_numpy()]
