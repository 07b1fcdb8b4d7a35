"""Chart series of one field for many devices over any range, from the source that keeps every
series under about `points` points: the raw readings up to two hours (grouped into a few seconds
where there are more), the 1-minute rollups up to a day and a half, the 1-hour rollups beyond
(grouped further past 83 days).

A 7-day chart of 50 devices reading once a second is 30 million raw readings; from the hourly
rollups it is 8,400 rows. The rollups' open buckets (the current minute and hour) come from the
checkpoint (`rollup/output.py`), so the chart reaches the present; a range of raw readings
includes what the stream holds beyond the last commit.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.errors import ChartError, TableNotFound
from sensorlake.lake.tables import TELEMETRY
from sensorlake.pipeline.checkpoint import CHECKPOINT_PROPERTY, CheckpointStore, from_ipc
from sensorlake.query.engine import QueryEngine
from sensorlake.query.fresh import Tail
from sensorlake.rollup.buckets import (
    HOUR,
    KEYS,
    LEVELS,
    MINUTE,
    PARTIAL_SCHEMA,
    Buckets,
    Level,
    merge,
)
from sensorlake.rollup.output import REBUILDING, as_partials, rollup_table_name

MAX_POINTS = 2000
RAW_UP_TO_S = 7200
"""Ranges read from raw readings: up to 7,200 a device at one a second, a few MB to group."""
SOURCES = ("auto", "raw", MINUTE.name, HOUR.name)


@dataclass(frozen=True)
class ChartRequest:
    field: str
    start_us: int
    end_us: int
    devices: tuple[str, ...] = ()
    """Empty: every device."""
    source: str = "auto"
    points: int = MAX_POINTS

    @property
    def span_s(self) -> float:
        return (self.end_us - self.start_us) / 1e6


def choose(request: ChartRequest) -> tuple[str, int]:
    """The source and the step (seconds; 0: each raw reading) that keep a series under
    `request.points`."""
    span, points = request.span_s, request.points
    source = request.source
    if source == "auto":
        if span <= max(points, RAW_UP_TO_S):
            source = "raw"
        elif span <= points * MINUTE.size_s:
            source = MINUTE.name
        else:
            source = HOUR.name
    natural = {"raw": 0, MINUTE.name: MINUTE.size_s, HOUR.name: HOUR.size_s}[source]
    needed = math.ceil(span / points) if span > points else 0
    if needed <= natural:
        return source, natural
    if natural:  # a whole number of the rollup's buckets
        return source, math.ceil(needed / natural) * natural
    return source, needed


def chart(engine: QueryEngine, store: CheckpointStore, request: ChartRequest, tail: Tail,
          known: set[str]) -> dict[str, Any]:
    if request.field not in known:
        raise ChartError(f"telemetry has no numeric field {request.field!r}",
                         hint=f"fields: {', '.join(sorted(known)) or '(none yet)'}")
    source, step = choose(request)
    if source == "raw":
        buckets = _raw(engine, request, tail, step)
    else:
        level = next(lv for lv in LEVELS if lv.name == source)
        buckets = _rollups(engine, store, level, request)
        if step > level.size_s:
            buckets = _regrouped(buckets, step)
    return _series(request, source, step, buckets, with_range=source != "raw" or step > 0)


def _where(request: ChartRequest) -> str:
    """Bounds on `ts` as literals, which the engine prunes data files by."""
    parts = [f"ts >= TIMESTAMPTZ '{_iso(request.start_us)}'",
             f"ts < TIMESTAMPTZ '{_iso(request.end_us)}'"]
    if request.devices:
        names = ", ".join("'" + d.replace("'", "''") + "'" for d in request.devices)
        parts.append(f"device_id IN ({names})")
    return " AND ".join(parts)


def _raw(engine: QueryEngine, request: ChartRequest, tail: Tail, step: int) -> pa.Table:
    column = '"' + request.field.replace('"', '""') + '"'
    sql = (f"SELECT device_id, epoch_us(ts) AS ts, CAST({column} AS DOUBLE) AS v FROM "
           f"{TELEMETRY} WHERE {_where(request)} AND {column} IS NOT NULL "
           "ORDER BY device_id, ts")
    try:
        rows = engine.execute(sql, tails={TELEMETRY: tail.table}, loaded=tail.loaded,
                              max_rows=5_000_000).table
    except TableNotFound:
        return PARTIAL_SCHEMA.empty_table()
    values = rows["v"]
    ts = rows["ts"].cast(pa.int64())
    if step:
        size = step * 1_000_000
        starts = ts.to_numpy(zero_copy_only=False)
        ts = pa.array(starts - np.mod(starts, size))
    parts = pa.table({"device_id": rows["device_id"], "field": pa.array(
        [request.field] * rows.num_rows, pa.string()), "bucket": ts, "min": values,
        "max": values, "sum": values, "count": pa.array(np.ones(rows.num_rows, np.int64)),
        "last": values, "last_ts": rows["ts"].cast(pa.int64())}, schema=PARTIAL_SCHEMA)
    return merge(parts) if step else parts


def _rollups(engine: QueryEngine, store: CheckpointStore, level: Level, request: ChartRequest
             ) -> pa.Table:
    field = request.field.replace("'", "''")
    start = request.start_us - request.start_us % level.size_us  # the bucket holding start
    shifted = ChartRequest(request.field, start, request.end_us, request.devices)
    name = rollup_table_name(level)
    sql = (f"SELECT ts, device_id, field, min, max, sum, count, last, last_ts FROM "
           f"{name} WHERE field = '{field}' AND {_where(shifted)}")
    parts = []
    tag = 0
    table = None
    for _ in range(5):
        # The checkpoint before the table: what the table lacks then, it lacks still — unless
        # a later step appended meanwhile (its open buckets would then count twice): again.
        checkpoint = store.checkpoint(name)
        try:
            table = engine.load(name)
        except TableNotFound:
            table = None
            break
        tag = int(table.properties.get(CHECKPOINT_PROPERTY, "0"))
        if checkpoint is None or tag <= checkpoint.number:
            break
    if table is not None:
        parts.append(as_partials(engine.execute(sql, loaded={name: table},
                                                max_rows=10_000_000).table))
    if checkpoint is not None and checkpoint.state != REBUILDING:
        kept = [Buckets.decode(level, checkpoint.state).open]
        if checkpoint.rows and tag < checkpoint.number:  # closed, not appended yet
            kept.append(from_ipc(checkpoint.rows))
        for rows in kept:
            keep = pc.and_(pc.equal(rows["field"], request.field),
                           pc.and_(pc.greater_equal(rows["bucket"], start),
                                   pc.less(rows["bucket"], request.end_us)))
            if request.devices:
                keep = pc.and_(keep, pc.is_in(rows["device_id"],
                                              pa.array(list(request.devices), pa.string())))
            parts.append(rows.filter(keep).select(PARTIAL_SCHEMA.names))
    if not parts:
        return PARTIAL_SCHEMA.empty_table()
    return merge(pa.concat_tables(parts))


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat()


def _regrouped(buckets: pa.Table, step: int) -> pa.Table:
    size = step * 1_000_000
    starts = buckets["bucket"].to_numpy(zero_copy_only=False)
    moved = buckets.set_column(KEYS.index("bucket"), "bucket",
                               pa.array(starts - np.mod(starts, size)))
    return merge(moved)


def _series(request: ChartRequest, source: str, step: int, buckets: pa.Table, *,
            with_range: bool) -> dict[str, Any]:
    buckets = buckets.sort_by([("device_id", "ascending"), ("bucket", "ascending")])
    devices = buckets["device_id"].to_numpy(zero_copy_only=False)
    series = []
    total = 0
    if len(devices):
        cuts = np.flatnonzero(devices[1:] != devices[:-1]) + 1
        bounds = [0, *cuts.tolist(), len(devices)]
        t = np.round(buckets["bucket"].to_numpy(zero_copy_only=False) / 1e6, 3)
        count = buckets["count"].to_numpy(zero_copy_only=False)
        avg = buckets["sum"].to_numpy(zero_copy_only=False) / np.maximum(count, 1)
        low = buckets["min"].to_numpy(zero_copy_only=False)
        high = buckets["max"].to_numpy(zero_copy_only=False)
        for a, b in itertools.pairwise(bounds):
            one: dict[str, Any] = {"device_id": str(devices[a]), "t": t[a:b].tolist(),
                                  "avg": avg[a:b].tolist()}
            if with_range:
                one.update(min=low[a:b].tolist(), max=high[a:b].tolist(),
                           count=count[a:b].tolist())
            series.append(one)
            total += b - a
    return {"field": request.field, "source": source, "step_s": step or None,
            "from": _iso(request.start_us), "to": _iso(request.end_us), "points": total,
            "series": series}
