"""The feature schema: which inputs the model reads, each categorical or numeric, and the one
encoding of a record or a table into model inputs.

Categorical values are strings hashed inside the graph (no vocabulary to keep, so new
advertisers and setups need no rebuild); numeric ones are floats normalised inside the graph.
The schema travels with the data: ``rarecvr replay`` (and the simulator) publish it to the
compacted feature-schema topic, the trainer builds its model from it, and each version's
architecture file carries it to the replicas, which refuse requests that do not fit it.

>>> import pyarrow as pa
>>> log = pa.table({"ip": [87540, 105560], "os": ["13", "17"], "spend": [0.5, 2.0]})
>>> schema, notes = infer(log, ["ip", "os", "spend"])
>>> schema
FeatureSchema(categorical=('ip', 'os'), numeric=('spend',))
>>> notes[0]
'ip: integers, categorical (ids are hashed; --numeric ip to model it as a number)'
>>> table = encode_table(log, schema)
>>> records = encode_records([{"ip": 87540, "os": "13", "spend": 0.5},
...                           {"ip": 105560, "os": "17", "spend": 2}], schema)
>>> all((table[n] == records[n]).all() for n in schema.names)
True
>>> encode_records([{"spend": "soon"}], schema)
Traceback (most recent call last):
...
rarecvr.schema.EncodingError: 0.spend: a numeric feature needs a finite number, got 'soon'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Features every event carries at its top level rather than in its ``features`` map.
TOP_LEVEL = ("setup_id", "advertiser_id")


@dataclass(frozen=True)
class FeatureSchema:
    """Model inputs: categorical features (hashed strings) and numeric ones (floats)."""

    categorical: tuple[str, ...]
    numeric: tuple[str, ...] = ()

    def __post_init__(self):
        both = sorted(set(self.categorical) & set(self.numeric))
        if both:
            raise ValueError(f"features {both} are both categorical and numeric")

    @property
    def names(self) -> tuple[str, ...]:
        return self.categorical + self.numeric

    def to_json(self) -> dict:
        return {"categorical": list(self.categorical), "numeric": list(self.numeric)}

    @classmethod
    def from_json(cls, value: dict) -> FeatureSchema:
        return cls(tuple(value["categorical"]), tuple(value.get("numeric", ())))

    def summary(self) -> str:
        numeric = ", ".join(self.numeric) or "none"
        return f"categorical: {', '.join(self.categorical)}; numeric: {numeric}"

    def difference(self, newer: FeatureSchema) -> dict[str, list[str]]:
        """What ``newer`` adds, drops and models differently (categorical <-> numeric)."""
        kinds = dict.fromkeys(self.categorical, "c") | dict.fromkeys(self.numeric, "n")
        later = dict.fromkeys(newer.categorical, "c") | dict.fromkeys(newer.numeric, "n")
        return {
            "added": [n for n in later if n not in kinds],
            "dropped": [n for n in kinds if n not in later],
            "changed": [n for n in later if n in kinds and kinds[n] != later[n]],
        }


class EncodingError(ValueError):
    """A record's feature value does not fit the schema; ``field`` is ``row.feature``."""

    def __init__(self, row: int, name: str, problem: str):
        self.field, self.problem = f"{row}.{name}", problem
        super().__init__(f"{self.field}: {problem}")


def infer(
    table: pa.Table,
    features: list[str],
    categorical: tuple[str, ...] = (),
    numeric: tuple[str, ...] = (),
) -> tuple[FeatureSchema, list[str]]:
    """A schema for these columns of a log, and a note on every choice that was not obvious.

    Floats are numeric; strings, booleans and integers categorical (integer columns in logs
    are ids: ``ip``, ``app``, ``os``). ``categorical`` and ``numeric`` override by name.
    """
    missing = [f for f in [*features, *categorical, *numeric] if f not in table.column_names]
    if missing:
        raise KeyError(f"the log has no column(s) {missing}; it has {table.column_names}")
    strays = [f for f in [*categorical, *numeric] if f not in features]
    if strays:
        raise ValueError(f"{strays} are not among the features {features}")
    cats, nums, notes = [], [], []
    for name in features:
        kind = table[name].type
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            raise ValueError(f"feature {name!r} is a time ({kind}); times are not features")
        if name in numeric:
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                raise ValueError(f"feature {name!r} is {kind}, which cannot be numeric")
            nums.append(name)
        elif name in categorical:
            cats.append(name)
        elif pa.types.is_floating(kind):
            nums.append(name)
        else:
            cats.append(name)
            if pa.types.is_integer(kind):
                notes.append(
                    f"{name}: integers, categorical (ids are hashed; --numeric "
                    f"{name} to model it as a number)"
                )
    return FeatureSchema(tuple(cats), tuple(nums)), notes


def _words(column: pa.ChunkedArray) -> np.ndarray:
    """A column as an array of UTF-8 bytes; dictionary columns decode via their dictionary."""
    column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        words = np.array(column.dictionary.cast(pa.string()).to_pylist(), dtype=object)
        words = np.char.encode(words.astype(str), "utf-8")
        return words[column.indices.fill_null(0).to_numpy(zero_copy_only=False)]
    return np.char.encode(
        np.asarray(pc.cast(column, pa.string()).fill_null("").to_pylist(), dtype=str), "utf-8"
    )


def encode_table(table: pa.Table, schema: FeatureSchema) -> dict[str, np.ndarray]:
    """The model's input arrays (bytes for categorical, float32 for numeric) from a table."""
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise KeyError(f"the table lacks model features {missing}; it has {table.column_names}")
    inputs = {name: _words(table[name]) for name in schema.categorical}
    for name in schema.numeric:
        values = table[name].cast(pa.float32()).fill_null(0.0)
        inputs[name] = values.to_numpy().astype(np.float32)
    return inputs


def word(value) -> str:
    """A categorical value as the string a table's cast makes of it (3.0 -> '3', True ->
    'true'), so that a record and a table row hash the same."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def number(value, row: int, name: str) -> float:
    """A numeric feature's value as a float (None is 0); EncodingError for anything that is
    not a finite number within float32's range."""
    if value is None:
        return 0.0
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not (numeric and abs(value) <= 3.4e38):  # NaN compares false
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise EncodingError(row, name, f"a numeric feature needs a finite number, got {shown}")
    return float(value)


def encode_records(records: list[dict], schema: FeatureSchema) -> dict[str, np.ndarray]:
    """The model's input arrays from flat feature dicts (events and requests); a missing
    feature is empty (categorical) or 0 (numeric), as a null is in a table."""
    inputs = {
        name: np.array([word(r.get(name)).encode() for r in records], dtype=object)
        for name in schema.categorical
    }
    for name in schema.numeric:
        inputs[name] = np.array(
            [number(r.get(name), i, name) for i, r in enumerate(records)], dtype=np.float32
        )
    return inputs
