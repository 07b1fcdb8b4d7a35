"""The rollup tables `telemetry_1m` and `telemetry_1h` as outputs of the pipeline's contract:
each bucket a row exactly once, built from the stream as it is read — never by scanning the
raw table again.

Each window's readings are merged into the open buckets (`rollup/buckets.py`); the buckets that
closed, and the open ones with the position they reflect, form one checkpoint
(`pipeline/checkpoint.py`): saved in the pipeline's database first, then the closed buckets are
appended to the table in one commit tagged with the checkpoint's number. The open buckets live
in the checkpoint, which the chart API reads too, so the last minute and hour are drawn before
they close.

Closed buckets wait in the checkpoint for up to EMIT_EVERY_S before they are appended, so that
a worker catching up does not commit the tables with every window; the chart API reads them
there meanwhile. A late bucket (one the table may already hold) is merged with the table's row
for it, and that row is deleted, in the same commit as the append: the table keeps one row per
bucket.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, BooleanExpression, EqualTo, In, Or
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestamptzType

from sensorlake import faults
from sensorlake.errors import RollupError
from sensorlake.faults import Faults
from sensorlake.lake.tables import COMMITS, TABLE_PROPERTIES, TELEMETRY, load_or_create
from sensorlake.lake.transaction import transaction
from sensorlake.pipeline.checkpoint import CheckpointedOutput, CheckpointStore
from sensorlake.rollup.buckets import (
    KEYS,
    LEVELS,
    OPEN_SCHEMA,
    PARTIAL_SCHEMA,
    Buckets,
    Level,
    merge,
)
from sensorlake.stream.partitions import Position

EMIT_EVERY_S = 10.0
"""Closed buckets wait in the checkpoint up to this long (or EMIT_ROWS of them) before they are
appended: a worker catching up closes buckets with every window, and a table commit per window
would cost more than the buckets."""
EMIT_ROWS = 100_000
REBUILDING = b"rebuilding"
"""The state a rebuild saves before it rewrites the table (`rollup/rebuild.py`)."""

ROLLUP_SCHEMA = Schema(
    NestedField(1, "ts", TimestamptzType(), required=False, doc="start of the bucket"),
    NestedField(2, "device_id", StringType(), required=False),
    NestedField(3, "field", StringType(), required=False, doc="column of telemetry"),
    NestedField(4, "min", DoubleType(), required=False),
    NestedField(5, "max", DoubleType(), required=False),
    NestedField(6, "avg", DoubleType(), required=False),
    NestedField(7, "sum", DoubleType(), required=False),
    NestedField(8, "count", LongType(), required=False, doc="readings in the bucket"),
    NestedField(9, "last", DoubleType(), required=False, doc="the bucket's latest value"),
    NestedField(10, "last_ts", TimestamptzType(), required=False, doc="when it was read"),
)
ROLLUP_ARROW = ROLLUP_SCHEMA.as_arrow()
_TS = pa.timestamp("us", tz="UTC")


def rollup_table_name(level: Level) -> str:
    return f"{TELEMETRY}_{level.name}"


def load_rollup_table(catalog: Catalog, namespace: str, level: Level) -> Table:
    return load_or_create(catalog, namespace, rollup_table_name(level), lambda: {
        "schema": ROLLUP_SCHEMA,
        "partition_spec": PartitionSpec(PartitionField(source_id=1, field_id=1000,
                                                       transform=DayTransform(),
                                                       name="ts_day")),
        "sort_order": SortOrder(SortField(source_id=2, transform=IdentityTransform()),
                                SortField(source_id=3, transform=IdentityTransform()),
                                SortField(source_id=1, transform=IdentityTransform())),
        "properties": TABLE_PROPERTIES})


def table_rows(buckets: pa.Table) -> pa.Table:
    """Buckets (PARTIAL_SCHEMA or more) as rows of a rollup table."""
    avg = pc.divide(buckets["sum"], pc.cast(buckets["count"], pa.float64()))
    return pa.table({
        "ts": buckets["bucket"].cast(_TS), "device_id": buckets["device_id"],
        "field": buckets["field"], "min": buckets["min"], "max": buckets["max"], "avg": avg,
        "sum": buckets["sum"], "count": buckets["count"], "last": buckets["last"],
        "last_ts": buckets["last_ts"].cast(_TS)}, schema=ROLLUP_ARROW)


def as_partials(rows: pa.Table) -> pa.Table:
    """Rows of a rollup table as buckets again (PARTIAL_SCHEMA)."""
    columns = {name: rows[name] for name in PARTIAL_SCHEMA.names if name != "bucket"}
    columns["bucket"] = rows["ts"]
    return pa.table({name: columns[name].cast(field.type) for name, field in
                     zip(PARTIAL_SCHEMA.names, PARTIAL_SCHEMA, strict=True)},
                    schema=PARTIAL_SCHEMA)


class RollupOutput(CheckpointedOutput):
    def __init__(self, level: Level, catalog: Catalog, namespace: str, store: CheckpointStore,
                 start_at: Callable[[], Position], fault_points: Faults = faults.NO_FAULTS,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(rollup_table_name(level), catalog, namespace, lambda b: b.readings,
                         fault_points=fault_points)
        self.level = level
        self.store = store
        self._start_at = start_at
        self._clock = clock
        self.buckets = Buckets.empty(level)
        self.waiting = OPEN_SCHEMA.empty_table()
        """Closed buckets the table does not hold yet (they are in the checkpoint)."""
        self._waiting_since = 0.0

    def _load(self) -> Table:
        return load_rollup_table(self._catalog, self._namespace, self.level)

    def _start(self) -> Position:
        return self._start_at()

    def _dump(self) -> bytes:
        return self.buckets.encode()

    def _restore(self, state: bytes, position: Position) -> None:
        if state == REBUILDING:
            raise RollupError(
                f"a rebuild of {self.name} was interrupted: the table may be half rewritten",
                hint="stop sensorlake and run `sensorlake rollups rebuild` again")
        self.buckets = Buckets.decode(self.level, state)
        self.waiting = OPEN_SCHEMA.empty_table()  # appended by the repair, if any were

    def write(self, rows: pa.Table | None, through: Position) -> None:
        self._faults.hit(faults.BEFORE_COMMIT)
        if self.done(through):
            return
        now = self._clock()
        buckets, closed = self.buckets.step(rows, now)
        waiting = pa.concat_tables([self.waiting, closed]) if closed.num_rows else self.waiting
        since = self._waiting_since if self.waiting.num_rows else now
        due = waiting.num_rows >= EMIT_ROWS or (
            waiting.num_rows > 0 and now - since >= EMIT_EVERY_S)

        def saved() -> None:
            self.buckets, self.waiting, self._waiting_since = buckets, waiting, since

        self.checkpoint(buckets.encode(), waiting if waiting.num_rows else None, through,
                        saved, append=due)

    def _emit(self, rows: pa.Table, properties: dict[str, str]) -> None:
        table = self.table
        # A bucket may have closed, reopened late and closed again while it waited.
        flags = rows.group_by(KEYS, use_threads=False).aggregate([("late", "any")])
        rows = merge(rows).join(flags, KEYS, join_type="left outer")
        late_mask = pc.fill_null(rows["late_any"], False)
        late = rows.filter(late_mask)
        rows = rows.select(PARTIAL_SCHEMA.names)
        delete: BooleanExpression | None = None
        if late.num_rows:
            delete = _keys_filter(late)
            held = table.scan(row_filter=delete).to_arrow()
            rows = pa.concat_tables([
                rows.filter(pc.invert(late_mask)),
                merge(pa.concat_tables([late.select(PARTIAL_SCHEMA.names),
                                        as_partials(held)]))])
        out = table_rows(rows).sort_by([("device_id", "ascending"), ("field", "ascending"),
                                        ("ts", "ascending")])
        tx = transaction(table)
        if delete is not None:
            tx.delete(delete)
        tx.append(out, snapshot_properties=properties)
        tx.set_properties(properties)
        self._faults.hit(faults.BEFORE_SWAP)
        try:
            with COMMITS:
                self._table = tx.commit_transaction()
        except Exception:
            self._table = None
            raise
        self.waiting = OPEN_SCHEMA.empty_table()


def _keys_filter(buckets: pa.Table) -> BooleanExpression:
    """Exactly the table rows of these buckets (device, field, start)."""
    grouped = buckets.group_by(["device_id", "field"], use_threads=False).aggregate(
        [("bucket", "list")])
    terms: list[BooleanExpression] = []
    for device, field, starts in zip(grouped["device_id"].to_pylist(),
                                     grouped["field"].to_pylist(),
                                     grouped["bucket_list"].to_pylist(), strict=True):
        at: BooleanExpression = (EqualTo(term="ts", value=starts[0]) if len(starts) == 1
                                 else In(term="ts", literals=set(starts)))
        terms.append(And(EqualTo(term="device_id", value=device),
                         EqualTo(term="field", value=field), at))
    return terms[0] if len(terms) == 1 else Or(*terms)


def rollup_outputs(catalog: Catalog, namespace: str, store: CheckpointStore,
                   start_at: Callable[[], Position], fault_points: Faults
                   ) -> list[RollupOutput]:
    return [RollupOutput(level, catalog, namespace, store, start_at, fault_points)
            for level in LEVELS]
