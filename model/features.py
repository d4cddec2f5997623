"""Which inputs the model reads, and how a table of examples becomes its input tensors.

Categorical values are strings hashed inside the graph (no vocabulary to keep, so new
advertisers and setups need no rebuild); numeric ones are floats normalised inside the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class FeatureSpec:
    """Model inputs: categorical features (hashed strings) and numeric ones (floats)."""

    categorical: tuple[str, ...]
    numeric: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return self.categorical + self.numeric


def _as_bytes(column: pa.ChunkedArray) -> np.ndarray:
    """A column as a fixed-width bytes array; dictionary columns decode via their dictionary."""
    column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        words = np.array(column.dictionary.cast(pa.string()).to_pylist(), dtype=object)
        words = np.char.encode(words.astype(str), "utf-8")
        return words[column.indices.fill_null(0).to_numpy(zero_copy_only=False)]
    return np.char.encode(
        np.asarray(pc.cast(column, pa.string()).fill_null("").to_pylist(), dtype=str), "utf-8"
    )


def to_inputs(table: pa.Table, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """The model's input arrays (bytes for categorical, float32 for numeric) from a table."""
    missing = [n for n in spec.names if n not in table.column_names]
    if missing:
        raise KeyError(f"the table lacks model features {missing}; it has {table.column_names}")
    inputs = {name: _as_bytes(table[name]) for name in spec.categorical}
    for name in spec.numeric:
        values = table[name].cast(pa.float32()).fill_null(0.0)
        inputs[name] = values.to_numpy().astype(np.float32)
    return inputs


def records_to_inputs(records: list[dict], spec: FeatureSpec) -> dict[str, np.ndarray]:
    """The model's input arrays from feature dicts (as carried by events and requests)."""
    inputs = {
        name: np.array([str(r.get(name, "")).encode() for r in records], dtype=object)
        for name in spec.categorical
    }
    for name in spec.numeric:
        inputs[name] = np.array([float(r.get(name, 0.0)) for r in records], dtype=np.float32)
    return inputs
