"""Reading a user's log: CSV (optionally gzipped, optionally without a header) or Parquet."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
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
