"""Reading a user's log: CSV (optionally gzipped, optionally without a header) or Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A CSV (optionally gzipped; ``columns`` names a header-less file) or Parquet file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such data file: {path}")
    if path.suffix == ".parquet":
        return pq.read_table(path)
    read = pacsv.ReadOptions(column_names=columns) if columns else pacsv.ReadOptions()
    parse = pacsv.ParseOptions(newlines_in_values=False)
    convert = pacsv.ConvertOptions(strings_can_be_null=False)
    table = pacsv.read_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    return table.rename_columns([c.strip() for c in table.column_names])


def millis(column: pa.ChunkedArray, unit: str = "ms") -> np.ndarray:
    """Event times in ms since the Unix epoch as floats (NaN where empty): integers or floats in
    ``unit`` (``ms`` or ``s``), or timestamps and dates."""
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        column = pc.cast(pc.cast(column, pa.timestamp("ms")), pa.int64())
        scale = 1
    else:
        scale = {"ms": 1, "s": 1000}[unit]
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    return values * scale
