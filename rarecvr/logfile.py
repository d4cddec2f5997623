"""Reading a user's log: CSV (optionally gzipped, optionally without a header) or Parquet."""

from __future__ import annotations

from dataclasses import dataclass
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


#: Epoch units by name, in ms.
UNITS = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
#: What a ``--unit`` option accepts.
UNIT_CHOICES = ("auto", *UNITS)
#: Formats tried, in order, for time strings that are not ISO-8601 (one format a column).
TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
)


def epoch_unit(values: np.ndarray) -> str:
    """The unit of epoch numbers, by their size: seconds up to 1e11 (the year 5138), then ms,
    us and ns.

    >>> epoch_unit(np.array([1.7e9])), epoch_unit(np.array([1.7e12, np.nan]))
    ('s', 'ms')
    """
    finite = np.abs(values[np.isfinite(values)])
    typical = float(np.median(finite)) if finite.size else 0.0
    for unit, limit in (("s", 1e11), ("ms", 1e14), ("us", 1e17)):
        if typical < limit:
            return unit
    return "ns"


def millis(column: pa.ChunkedArray, unit: str = "auto", name: str = "time") -> np.ndarray:
    """Event times in ms since the Unix epoch as floats (NaN where empty).

    Numbers are epoch times in ``unit`` (``s``, ``ms``, ``us``, ``ns``; ``auto`` by their
    size), strings ISO-8601 (with or without a zone; without is UTC) or one of
    ``TIME_FORMATS``, and Arrow timestamps and dates as they are. ValueError names ``name`` and
    the first value that cannot be read.

    >>> millis(pa.chunked_array([["2017-11-07 09:30:38", "", "2017-11-07T10:30:38+01:00"]]))
    array([1.51004704e+12,            nan, 1.51004704e+12])
    """
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = _parse_times(column, name)
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        stamps = pc.cast(column, pa.timestamp("ms", tz=getattr(column.type, "tz", None)))
        return pc.cast(stamps, pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)
    if not (
        pa.types.is_integer(column.type)
        or pa.types.is_floating(column.type)
        or pa.types.is_null(column.type)
    ):
        raise ValueError(f"column {name!r} holds {column.type}, not times")
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    if unit not in UNITS and unit != "auto":
        raise ValueError(f"unknown time unit {unit!r}; one of auto, {', '.join(UNITS)}")
    return values * UNITS[epoch_unit(values) if unit == "auto" else unit]


def _parse_times(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """Time strings as UTC timestamps; empty strings are nulls."""
    trimmed = pc.utf8_trim_whitespace(column)
    present = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
    zoned = pc.match_substring_regex(present, r"(Z|[+-]\d\d:?\d\d)$")
    as_utc = pc.if_else(zoned, present, pc.binary_join_element_wise(present, "Z", ""))
    try:
        return pc.cast(as_utc, pa.timestamp("ms", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    for fmt in TIME_FORMATS:
        parsed = pc.strptime(present, format=fmt, unit="ms", error_is_null=True)
        if parsed.null_count == present.null_count:
            return parsed
    row = next(
        i
        for i, v in enumerate(present.to_pylist())
        if v is not None and not any(_parses(v, f) for f in TIME_FORMATS)
    )
    raise ValueError(
        f"column {name!r}: cannot read {present[row].as_py()!r} (row {row}) as a "
        "time; use ISO-8601 (2017-11-07T09:30:38Z), epoch numbers, or one of "
        f"{', '.join(TIME_FORMATS)}"
    )


def _parses(value: str, fmt: str) -> bool:
    return pc.strptime(pa.array([value]), format=fmt, unit="ms", error_is_null=True)[0].is_valid


def setup_ids(table: pa.Table, columns: list[str]) -> pa.Array:
    """Each row's conversion setup: its values of ``columns`` as strings, joined by "|" (the
    ``setup_id`` that replay, history and research give the same row).

    >>> setup_ids(pa.table({"app": [12, 3], "os": [" a", "b"]}), ["app", "os"]).to_pylist()
    ['12|a', '3|b']
    """
    words = [pc.utf8_trim_whitespace(pc.cast(table[c], pa.string())) for c in columns]
    return pc.binary_join_element_wise(*words, "|").combine_chunks()


def advertiser_ids(table: pa.Table, column: str | None, setups: pa.Array) -> pa.Array:
    """Each row's advertiser: ``column``, else an ``advertiser_id`` column, else its setup."""
    column = column or ("advertiser_id" if "advertiser_id" in table.column_names else None)
    return pc.cast(table[column], pa.string()).combine_chunks() if column else setups


@dataclass(frozen=True)
class HistoryLog:
    """Where a log of past clicks is and which of its columns say what."""

    path: Path
    click_time: str = "ts_ms"
    conversion_time: str = "conversion_ts_ms"
    setup: tuple[str, ...] = ("setup_id",)  #: joined as ``rarecvr replay`` joins them
    unit: str = "auto"
    advertiser: str | None = None  #: see ``rarecvr.logfile.advertiser_ids``
