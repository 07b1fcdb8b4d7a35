"""The lake's tables, their fixed columns and layout, and the stream position each has committed."""

from __future__ import annotations

import contextlib
import logging

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

log = logging.getLogger(__name__)

TELEMETRY = "telemetry"
DEAD_LETTER = "dead_letter"

BASE_COLUMNS = ("topic", "device_id", "ts", "received_at", "seq")
RESERVED = frozenset(BASE_COLUMNS)

SEQ_PROPERTY = "sensorlake.seq"
STREAM_PROPERTY = "sensorlake.stream"

TABLE_PROPERTIES = {
    "write.parquet.compression-codec": "zstd",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "50",
}

TELEMETRY_SCHEMA = Schema(
    NestedField(1, "topic", StringType(), required=False, doc="MQTT topic the reading came on"),
    NestedField(2, "device_id", StringType(), required=False, doc="payload or topic level"),
    NestedField(3, "ts", TimestamptzType(), required=False, doc="event time"),
    NestedField(4, "received_at", TimestamptzType(), required=False, doc="stream store time"),
    NestedField(5, "seq", LongType(), required=False, doc="stream sequence of its message"),
)
TELEMETRY_PARTITION = PartitionSpec(
    PartitionField(source_id=3, field_id=1000, transform=DayTransform(), name="ts_day")
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


def load_table(catalog: Catalog, namespace: str, name: str) -> Table:
    try:
        return catalog.load_table((namespace, name))
    except NoSuchTableError:
        raise TableNotFound(
            f"no table named {name!r}", hint="`sensorlake tables` lists the tables"
        ) from None


def stream_position(table: Table) -> tuple[int, str | None]:
    """(highest stream sequence, stream identity) of the newest snapshot that records one.

    Walks back from the current snapshot, since maintenance commits (compaction, expiry) carry no
    stream position of their own.
    """
    snapshot = table.current_snapshot()
    while snapshot is not None:
        summary = snapshot.summary
        if summary is not None and summary.get(SEQ_PROPERTY):
            return int(str(summary[SEQ_PROPERTY])), summary.get(STREAM_PROPERTY)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return 0, None


def committed_seq(table: Table, stream_identity: str) -> int:
    """Highest stream sequence committed into `table` from this stream (0 if none)."""
    seq, identity = stream_position(table)
    if identity is not None and identity != stream_identity:
        log.warning(
            "table %s was last written from stream %s, not %s; starting from its beginning",
            table.name(), identity, stream_identity,
        )
        return 0
    return seq
