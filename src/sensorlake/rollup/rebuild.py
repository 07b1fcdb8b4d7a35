"""`sensorlake rollups rebuild`: the rollup tables computed again from the whole telemetry table
— after rollups were turned on for a lake that already held readings, after a restore, or when
a table was changed by hand.

It runs with the pipeline stopped, reading one snapshot of telemetry and the position that
snapshot holds; the rollups then resume from exactly there, so the stream after it is counted
once. The checkpoint is marked as rebuilding before the table is rewritten: a rebuild cut short
leaves that mark, and the pipeline refuses to write the rollups until the rebuild is run again,
rather than counting readings twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue

from sensorlake.config import Config
from sensorlake.errors import RollupError
from sensorlake.lake.catalog import open_catalog
from sensorlake.lake.tables import COMMITS, TELEMETRY, ensure_tables, read_position
from sensorlake.lake.transaction import transaction
from sensorlake.pipeline.checkpoint import Checkpoint, CheckpointStore, properties
from sensorlake.rollup.buckets import (
    LEVELS,
    MARK_SCHEMA,
    OPEN_SCHEMA,
    THROUGH_SCHEMA,
    Buckets,
    Level,
    merge,
    partials,
)
from sensorlake.rollup.output import REBUILDING, load_rollup_table, rollup_table_name, table_rows
from sensorlake.runfile import running
from sensorlake.stream.partitions import Position

MERGE_EVERY = 2_000_000
"""Bucket rows gathered before they are merged, so memory follows buckets, not readings."""


@dataclass(frozen=True)
class Rebuilt:
    table: str
    readings: int
    rows: int
    open: int


def rebuild(config: Config, progress: Callable[[int, int], None] = lambda done, total: None
            ) -> list[Rebuilt]:
    if running(config.data_dir) is not None:
        raise RollupError("sensorlake is running on this data dir",
                          hint="stop it, run `sensorlake rollups rebuild`, then start it again")
    catalog = open_catalog(config)
    namespace = config.lake.namespace
    telemetry = ensure_tables(catalog, namespace)[TELEMETRY]
    position = read_position(telemetry)  # what this very snapshot holds
    snapshot = telemetry.current_snapshot()
    total = int(snapshot.summary.get("total-records", 0) or 0) if snapshot and \
        snapshot.summary else 0
    gathered: dict[str, list[pa.Table]] = {level.name: [] for level in LEVELS}
    sizes = dict.fromkeys(gathered, 0)
    done = 0
    for batch in telemetry.scan().to_arrow_batch_reader():
        readings = pa.Table.from_batches([batch])
        for level in LEVELS:
            part = partials(readings, level)
            gathered[level.name].append(part)
            sizes[level.name] += part.num_rows
            if sizes[level.name] >= MERGE_EVERY:
                merged = merge(pa.concat_tables(gathered[level.name]))
                gathered[level.name], sizes[level.name] = [merged], merged.num_rows
        done += readings.num_rows
        progress(done, total)
    store = CheckpointStore.for_config(config)
    return [_write(catalog, namespace, store, level, gathered[level.name], position, done)
            for level in LEVELS]


def _write(catalog: Catalog, namespace: str, store: CheckpointStore, level: Level,
           parts: list[pa.Table], position: Position, readings: int) -> Rebuilt:
    name = rollup_table_name(level)
    every = merge(pa.concat_tables(parts)) if parts else merge(OPEN_SCHEMA.empty_table())
    marks = every.group_by("device_id", use_threads=False).aggregate([("last_ts", "max")])
    start = Buckets(level, pa.table({
        **{n: every[n] for n in every.column_names},
        "touched": pa.array([0.0] * every.num_rows, pa.float64()),
        "late": pa.array([False] * every.num_rows, pa.bool_())}, schema=OPEN_SCHEMA),
        THROUGH_SCHEMA.empty_table(),
        pa.table({"device_id": marks["device_id"], "mark": marks["last_ts_max"]},
                 schema=MARK_SCHEMA))
    state, closed = start.step(None, time.time())
    held = store.checkpoint(name)
    number = (held.number if held is not None else 0) + 1
    store.save_checkpoint(name, Checkpoint(position, number, REBUILDING, None))
    table = load_rollup_table(catalog, namespace, level)
    tx = transaction(table)
    tx.delete(AlwaysTrue())
    if closed.num_rows:
        rows = table_rows(closed).sort_by([("device_id", "ascending"), ("field", "ascending"),
                                           ("ts", "ascending")])
        tx.append(rows, snapshot_properties=properties(number, position))
    tx.set_properties(properties(number, position))
    with COMMITS:
        tx.commit_transaction()
    store.save_checkpoint(name, Checkpoint(position, number, state.encode(), None))
    return Rebuilt(name, readings, closed.num_rows, state.open.num_rows)
