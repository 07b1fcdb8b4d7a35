"""The lake's tables, their fixed columns and layout, and the stream position each has committed."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    BinaryType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from sensorlake.errors import TableNotFound
from sensorlake.stream.partitions import Position

log = logging.getLogger(__name__)

TELEMETRY = "telemetry"
DEAD_LETTER = "dead_letter"

STREAM_FIELD = "stream"
BASE_COLUMNS = ("topic", "device_id", "ts", "received_at", "seq", STREAM_FIELD)
PARTITION_NAMES = ("ts_day",)
"""Iceberg refuses a column named like a partition field of the table."""
RESERVED = frozenset((*BASE_COLUMNS, *PARTITION_NAMES))
"""Names a payload key cannot take: it keeps its value as `payload_<key>` (`device_id` and `ts`
fill the base columns of their name instead)."""

POSITION_PROPERTY = "sensorlake.position"
"""Table property: how far the output writing the table has committed (`Position.encode`). It is
set in the same metadata commit as the rows it covers, and unlike a snapshot's summary it is
untouched by snapshot expiry or compaction, so no maintenance can move it back."""
SEQ_PROPERTY = "sensorlake.seq"
STREAM_PROPERTY = "sensorlake.stream"
"""Snapshot summary keys of earlier versions, read only to resume a table they wrote."""

COMMITS = threading.Lock()
"""One catalog commit at a time in this process. The pipeline's appends and maintenance's
rewrites never conflict in meaning, but each commit is a compare-and-swap of the table's
metadata: under a commit every 0.1 s, a compaction (whose commit takes longer) would lose every
race and never land. Taken around the commit only; never while waiting on anything else."""

_rewrites = 0


def rewritten() -> int:
    """How many maintenance commits this process has made: an output whose table was loaded
    at an older count reloads it before its next commit, instead of losing a race and waiting
    out pyiceberg's retry."""
    return _rewrites


def count_rewrite() -> None:
    global _rewrites
    _rewrites += 1


TABLE_PROPERTIES = {
    "write.parquet.compression-codec": "zstd",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "50",
    # Compaction and retention replace files with the same rows: a concurrent append adds rows
    # they do not touch, which is no conflict (the default, serializable, calls it one).
    "write.delete.isolation-level": "snapshot",
    "write.update.isolation-level": "snapshot",
}
"""Set when a table is created; maintenance adds any missing to tables made by earlier
versions."""

TELEMETRY_SCHEMA = Schema(
    NestedField(1, "topic", StringType(), required=False, doc="MQTT topic the reading came on"),
    NestedField(2, "device_id", StringType(), required=False, doc="payload or topic level"),
    NestedField(3, "ts", TimestamptzType(), required=False, doc="event time"),
    NestedField(4, "received_at", TimestamptzType(), required=False, doc="stream store time"),
    NestedField(5, "seq", LongType(), required=False, doc="stream sequence of its message"),
    NestedField(6, STREAM_FIELD, StringType(), required=False,
                doc="stream its message was read from; with seq, names the message"),
)
TELEMETRY_PARTITION = PartitionSpec(
    PartitionField(source_id=3, field_id=1000, transform=DayTransform(), name=PARTITION_NAMES[0])
)
TELEMETRY_SORT = SortOrder(
    SortField(source_id=2, transform=IdentityTransform()),
    SortField(source_id=3, transform=IdentityTransform()),
)

DEAD_LETTER_SCHEMA = Schema(
    NestedField(1, "topic", StringType(), required=False),
    NestedField(2, "device_id", StringType(), required=False),
    NestedField(3, "seq", LongType(), required=False),
    NestedField(4, "received_at", TimestamptzType(), required=False),
    NestedField(5, "reason", StringType(), required=False),
    NestedField(6, "raw", BinaryType(), required=False),
    NestedField(7, STREAM_FIELD, StringType(), required=False),
)
DEAD_LETTER_PARTITION = PartitionSpec(
    PartitionField(source_id=4, field_id=1000, transform=DayTransform(), name="received_day")
)
DEAD_LETTER_ARROW = pa.schema(
    [
        pa.field("topic", pa.string()),
        pa.field("device_id", pa.string()),
        pa.field("seq", pa.int64()),
        pa.field("received_at", pa.timestamp("us", tz="UTC")),
        pa.field("reason", pa.string()),
        pa.field("raw", pa.binary()),
        pa.field(STREAM_FIELD, pa.string()),
    ]
)


def ensure_tables(catalog: Catalog, namespace: str) -> dict[str, Table]:
    """Create the default tables if they are missing (safe to race with another process)."""
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace_if_not_exists(namespace)
    telemetry = catalog.create_table_if_not_exists(
        (namespace, TELEMETRY),
        schema=TELEMETRY_SCHEMA,
        partition_spec=TELEMETRY_PARTITION,
        sort_order=TELEMETRY_SORT,
        properties=TABLE_PROPERTIES,
    )
    dead = catalog.create_table_if_not_exists(
        (namespace, DEAD_LETTER),
        schema=DEAD_LETTER_SCHEMA,
        partition_spec=DEAD_LETTER_PARTITION,
        properties=TABLE_PROPERTIES,
    )
    return {TELEMETRY: telemetry, DEAD_LETTER: dead}


@dataclass(frozen=True)
class Totals:
    """What the table's current snapshot holds, from its summary (zeros when it has none)."""

    rows: int = 0
    files: int = 0
    bytes: int = 0
    snapshots: int = 0
    metadata_bytes: int = 0


def table_totals(table: Table) -> Totals:
    snapshot = table.current_snapshot()
    summary = snapshot.summary if snapshot is not None else None

    def total(key: str) -> int:
        return int(summary.get(key, 0) or 0) if summary is not None else 0

    return Totals(total("total-records"), total("total-data-files"), total("total-files-size"),
                  len(table.metadata.snapshots), len(table.io.new_input(table.metadata_location)))


def load_table(catalog: Catalog, namespace: str, name: str) -> Table:
    try:
        return catalog.load_table((namespace, name))
    except NoSuchTableError:
        raise TableNotFound(
            f"no table named {name!r}", hint="`sensorlake tables` lists the tables"
        ) from None


def load_or_create(catalog: Catalog, namespace: str, name: str,
                   create: Callable[[], dict[str, Any]]) -> Table:
    """The table, created with the arguments `create()` gives when it is missing (safe to race
    with another process). Loaded first: a create that finds the table has already written a
    metadata file nothing will reference."""
    try:
        return catalog.load_table((namespace, name))
    except NoSuchTableError:
        pass
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace_if_not_exists(namespace)
    return catalog.create_table_if_not_exists((namespace, name), **create())


def position_key(writer: str | None = None) -> str:
    """The property holding the position of `writer`: the table's own output by default, or
    another output that also writes into this table (e.g. readings it had to reject)."""
    return POSITION_PROPERTY if writer is None else f"{POSITION_PROPERTY}.{writer}"


def read_position(table: Table, writer: str | None = None) -> Position:
    """What `table` holds, as recorded by its last commit (an empty position if none)."""
    text = table.properties.get(position_key(writer))
    if text:
        return Position.decode(text)
    if writer is not None:
        return Position()
    return _legacy_position(table)


def _legacy_position(table: Table) -> Position:
    """The position of a table written by an earlier version: in the summary of the newest
    snapshot that records one."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        summary = snapshot.summary
        if summary is not None and summary.get(SEQ_PROPERTY):
            identity = str(summary.get(STREAM_PROPERTY) or "")
            name = identity.split("@", 1)[0]
            return Position({name: int(str(summary[SEQ_PROPERTY]))}, {name: identity})
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return Position()
