"""A query's result: Arrow as DuckDB hands it over, turned into Python or JSON values a column
at a time.

Row by row, DuckDB's fetch (and pyarrow's) builds each UTC timestamp through a zoneinfo lookup:
~4 µs a value, 0.35 s for one device's day of readings, ten times the query itself. Here a
timestamp column becomes ISO 8601 text in one vectorised call for JSON, and a datetime by adding
microseconds to the epoch where Python values are wanted; both give what `datetime.isoformat()`
gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.values import csv_text

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "+00:00", "Z"})


@dataclass
class QueryResult:
    columns: list[str]
    types: list[str]
    table: pa.Table
    truncated: bool = False
    uncommitted_rows: int = 0
    elapsed_ms: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_csv(self) -> bytes:
        return csv_text(self.columns, self.rows).encode()

    @cached_property
    def rows(self) -> list[tuple[Any, ...]]:
        """Python values, as DuckDB's own fetch gives them (UTC times as aware datetimes)."""
        columns = [_python_values(self.table.column(i)) for i in range(self.table.num_columns)]
        return list(zip(*columns, strict=True))

    def to_json(self, shape: str = "rows") -> dict[str, Any]:
        """The API's answer; values JSON-ready but for what orjson serialises itself or
        `values.jsonable` converts (decimals, bytes, UUIDs).

        `shape="columns"` gives `data`, one array per column, instead of `rows`: what chart
        libraries draw from, and for a long result several times cheaper to build and parse.
        """
        values: dict[str, Any]
        if shape == "columns":
            values = {"data": [_json_array(self.table.column(i))
                               for i in range(self.table.num_columns)]}
        else:
            columns = [_json_values(self.table.column(i)) for i in range(self.table.num_columns)]
            values = {"rows": list(zip(*columns, strict=True))}  # tuples: orjson writes arrays
        return {
            "columns": self.columns,
            "types": self.types,
            **values,
            "truncated": self.truncated,
            "uncommitted_rows": self.uncommitted_rows,
            "elapsed_ms": round(self.elapsed_ms, 3),
            **({"notes": self.notes} if self.notes else {}),
        }


def first_rows(relation: duckdb.DuckDBPyRelation, count: int) -> pa.Table:
    """Up to `count` rows: the rest of the result is never computed."""
    reader = relation.to_arrow_reader(batch_size=min(count, 100_000))
    batches: list[pa.RecordBatch] = []
    have = 0
    for batch in reader:
        batches.append(batch.slice(0, count - have))
        have += batches[-1].num_rows
        if have >= count:
            break
    return pa.Table.from_batches(batches, schema=reader.schema)


def _utc_micros(kind: pa.DataType) -> bool:
    return pa.types.is_timestamp(kind) and kind.unit == "us" and kind.tz in _UTC_NAMES


def _python_values(column: pa.ChunkedArray) -> list[Any]:
    kind = column.type
    if _utc_micros(kind):
        return [None if us is None else _EPOCH + timedelta(microseconds=us)
                for us in column.cast(pa.int64()).to_pylist()]
    if _has_map(kind):  # as DuckDB gives a MAP: a dict, not a list of pairs
        mapped: list[Any] = column.to_pylist(maps_as_pydicts="lossy")
        return mapped
    values: list[Any] = column.to_pylist()  # the option above costs 10× on every column
    return values


def _json_array(column: pa.ChunkedArray) -> Any:
    """A column as one JSON array. Numbers and UTC times without nulls are written by orjson
    straight from their numpy view (5 ms instead of 20 for a day of one-second timestamps);
    anything else through Python values."""
    kind = column.type
    if column.null_count == 0 and len(column):
        if pa.types.is_floating(kind) or pa.types.is_integer(kind):
            if pa.types.is_floating(kind) and not pa.types.is_float64(kind):
                column = column.cast(pa.float64())  # the value Python would have, as before
            return orjson.Fragment(orjson.dumps(column.to_numpy(),
                                                option=orjson.OPT_SERIALIZE_NUMPY))
        if _utc_micros(kind):  # numpy's datetime64 is naive: written as UTC, "+00:00"
            times = column.cast(pa.timestamp("us")).to_numpy()
            return orjson.Fragment(orjson.dumps(
                times, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NAIVE_UTC))
    return _json_values(column)


def _json_values(column: pa.ChunkedArray) -> list[Any]:
    kind = column.type
    if _utc_micros(kind) or (pa.types.is_timestamp(kind) and kind.unit == "us" and not kind.tz):
        # "2026-05-01 12:00:00.250000", as the wall time in UTC; isoformat's T, and no
        # fraction when it is zero. (pc.strftime would take 20 times as long.)
        text = pc.utf8_replace_slice(column.cast(pa.timestamp("us")).cast(pa.string()),
                                     start=10, stop=11, replacement="T")
        text = pc.if_else(pc.ends_with(text, ".000000"), pc.utf8_slice_codeunits(text, 0, 19),
                          text)
        if kind.tz:
            text = pc.binary_join_element_wise(text, "+00:00", "")
        iso: list[Any] = text.to_pylist()
        return iso
    return _python_values(column)


def _has_map(kind: pa.DataType) -> bool:
    if pa.types.is_map(kind):
        return True
    if pa.types.is_struct(kind):
        return any(_has_map(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _has_map(kind.value_type)
    return False
