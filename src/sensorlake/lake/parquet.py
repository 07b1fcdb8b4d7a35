"""The Parquet files compaction writes: sorted, and encoded for what sensor data looks like.

Once a partition's rows are sorted by device and time, each device's timestamps, arrival times
and sequence numbers climb in nearly equal steps. Parquet's default for them, a dictionary that
overflows and falls back to plain 8-byte values, leaves zstd ~2-4 bytes a row per column;
DELTA_BINARY_PACKED stores the steps in a few bits. Measured on a day of 50 greenhouse probes
(`benchmarks/history.py`): 10.6 bytes a reading with pyarrow's defaults, 4.5 with this. pyiceberg's
writer has no setting for column encodings, so compaction writes its files here and hands
pyiceberg the same `DataFile` (statistics included) that its own writer would.

Readers need nothing special: DELTA_BINARY_PACKED is part of the Parquet format and read by
DuckDB, Spark, Trino and pyarrow alike.
"""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
    schema_to_pyarrow,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.table import Table, TableProperties
from pyiceberg.typedef import Record
from pyiceberg.types import (
    DateType,
    IntegerType,
    LongType,
    TimestampType,
    TimestamptzType,
    TimeType,
)

ROW_GROUP_ROWS = 131_072
"""Rows per row group unless the table sets `write.parquet.row-group-limit`. A row group is what
a reader skips by its statistics: one device's day at one reading a second is 86,400 rows, so
with pyiceberg's 1,048,576 a query for it decoded a million rows of other devices; full scans
cost the same either way (measured on `benchmarks/history.py`'s week: 25 → 18 ms for one
device's day, 1.52 s for the week's hourly averages both ways)."""

_STEPPING = (IntegerType, LongType, TimestampType, TimestamptzType, DateType, TimeType)
"""Types whose values, sorted by device and time, move in small steps."""


def delta_columns(table: Table) -> list[str]:
    """Top-level integer and time columns: they get DELTA_BINARY_PACKED, the rest dictionaries."""
    return [f.name for f in table.schema().fields if isinstance(f.field_type, _STEPPING)]


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """Parquet's column paths (`reading.value`, `tags.list.element`): what per-column writer
    options name. Taken from pyarrow's own mapping, by writing an empty file."""
    buffer = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), buffer)
    parquet_schema = pq.read_metadata(pa.BufferReader(buffer.getvalue())).schema
    return [parquet_schema.column(i).path for i in range(len(parquet_schema))]


def write_data_file(table: Table, rows: pa.Table, spec_id: int, partition: Record) -> DataFile:
    """One data file of `rows` (in the table's schema) in `partition` of spec `spec_id`."""
    schema = table.schema()
    arrow_schema = schema_to_pyarrow(schema, include_field_ids=True)
    rows = rows.select(arrow_schema.names).cast(arrow_schema)
    spec = table.specs()[spec_id]
    folder = spec.partition_to_path(partition, schema) if spec.fields else ""
    name = f"compacted-{uuid.uuid4()}.parquet"
    path = table.location_provider().new_data_location(f"{folder}/{name}" if folder else name)
    props = table.properties
    delta = delta_columns(table)
    level = props.get(TableProperties.PARQUET_COMPRESSION_LEVEL)
    output = table.io.new_output(path)
    with output.create(overwrite=False) as stream:
        writer = pq.ParquetWriter(
            stream, schema=arrow_schema,
            compression=props.get(TableProperties.PARQUET_COMPRESSION,
                                  TableProperties.PARQUET_COMPRESSION_DEFAULT),
            compression_level=int(level) if level else None,
            use_dictionary=[c for c in _leaf_paths(arrow_schema) if c not in delta],
            column_encoding=dict.fromkeys(delta, "DELTA_BINARY_PACKED"),
            store_decimal_as_integer=True,
        )
        with writer:
            writer.write_table(rows, row_group_size=int(props.get(
                TableProperties.PARQUET_ROW_GROUP_LIMIT, ROW_GROUP_ROWS)))
        metadata = writer.writer.metadata
    statistics = data_file_statistics_from_parquet_metadata(
        parquet_metadata=metadata,
        stats_columns=compute_statistics_plan(schema, props),
        parquet_column_mapping=parquet_path_to_id_mapping(schema),
    )
    return DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=partition,
        file_size_in_bytes=len(output),
        sort_order_id=table.sort_order().order_id or None,
        spec_id=spec_id,
        equality_ids=None,
        key_metadata=None,
        **statistics.to_serialized_dict(),
    )
