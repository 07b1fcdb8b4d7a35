"""The `alert_log` table: every attempt to send a notification, queryable with SQL.

Attempts are written first to the database, with the queue they change; this loop copies them
into the Iceberg table every few seconds, recording the last id copied in the same commit, so
each attempt lands in the table exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform
from pyiceberg.types import (
    DoubleType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from sensorlake.alerts.store import AlertStore
from sensorlake.lake.tables import COMMITS, TABLE_PROPERTIES, load_or_create
from sensorlake.lake.transaction import transaction

log = logging.getLogger(__name__)

ALERT_LOG = "alert_log"
LAST_ID_PROPERTY = "sensorlake.alert_log_id"
FLUSH_S = 2.0
KEEP_IN_DATABASE_S = 86_400.0
"""Attempts the table holds stay in the database this long too, then go (the table keeps them,
for `lake.retention_days.alert_log` or for good)."""

ALERT_LOG_SCHEMA = Schema(
    NestedField(1, "at", TimestamptzType(), required=False, doc="when the attempt ended"),
    NestedField(2, "channel", StringType(), required=False),
    NestedField(3, "group_key", StringType(), required=False),
    NestedField(4, "notification", LongType(), required=False),
    NestedField(5, "kind", StringType(), required=False, doc="firing, resolved or test"),
    NestedField(6, "status", StringType(), required=False,
                doc="sent, retry, rate_limited, refused, gave_up, dropped; a test: sent "
                    "or failed"),
    NestedField(7, "attempts", IntegerType(), required=False),
    NestedField(8, "latency_ms", DoubleType(), required=False),
    NestedField(9, "response_code", IntegerType(), required=False),
    NestedField(10, "error", StringType(), required=False),
)
_ARROW = ALERT_LOG_SCHEMA.as_arrow()


def alert_log_table(catalog: Catalog, namespace: str) -> Table:
    return load_or_create(catalog, namespace, ALERT_LOG, lambda: {
        "schema": ALERT_LOG_SCHEMA,
        "partition_spec": PartitionSpec(PartitionField(source_id=1, field_id=1000,
                                                       transform=DayTransform(),
                                                       name="at_day")),
        "properties": TABLE_PROPERTIES})


def copy_log(catalog: Catalog, namespace: str, store: AlertStore) -> int:
    """Copy what the table lacks; returns how many attempts."""
    table = alert_log_table(catalog, namespace)
    last = int(table.properties.get(LAST_ID_PROPERTY, "0"))
    rows = store.log_after(last)
    if not rows:
        if last:
            store.prune_log(last, time.time() - KEEP_IN_DATABASE_S)
        return 0
    table_rows = _rows(rows)
    tx = transaction(table)
    properties = {LAST_ID_PROPERTY: str(rows[-1]["id"])}
    tx.append(table_rows, snapshot_properties=properties)
    tx.set_properties(properties)
    with COMMITS:
        tx.commit_transaction()
    return len(rows)


def _rows(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.table({
        "at": [datetime.fromtimestamp(r["at"], UTC) for r in rows],
        "channel": [r["channel"] for r in rows],
        "group_key": [r["group_key"] for r in rows],
        "notification": [r["notification"] for r in rows],
        "kind": [r["kind"] for r in rows],
        "status": [r["status"] for r in rows],
        "attempts": [r["attempts"] for r in rows],
        "latency_ms": [r["latency_ms"] for r in rows],
        "response_code": [r["response_code"] for r in rows],
        "error": [r["error"] for r in rows],
    }, schema=_ARROW)


async def keep_log(catalog: Catalog, namespace: str, store: AlertStore,
                   stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FLUSH_S)
        try:
            await asyncio.to_thread(copy_log, catalog, namespace, store)
        except Exception as exc:  # the catalog away: the next round copies these too
            log.warning("alert_log: cannot copy attempts into the table: %s", exc)
