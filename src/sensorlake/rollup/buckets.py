"""Time buckets of readings: per device, numeric field and minute (or hour), the `min`, `max`,
`sum`, `count` and `last` value — computed from each window's readings, merged into the buckets
still open, and handed out once a bucket is closed.

All of it is columnar (pyarrow group-bys and joins): a window of 100,000 readings costs a few
milliseconds whatever the number of devices. A bucket closes once its device's own readings are
`grace` past its end (so a device replaying yesterday from its agent's queue closes its buckets
as its clock moves, not by ours), or, for a device that went quiet, once our clock is past its
end and nothing came for it for `grace`. A reading for a bucket already closed — a late one —
opens it again, marked `late`: when it closes, the row the table holds for it is merged with it
and replaced (`rollup/output.py`).
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.lake.tables import RESERVED, STREAM_FIELD
from sensorlake.pipeline.checkpoint import to_ipc

KEYS = ["device_id", "field", "bucket"]

PARTIAL_SCHEMA = pa.schema([
    ("device_id", pa.string()), ("field", pa.string()), ("bucket", pa.int64()),
    ("min", pa.float64()), ("max", pa.float64()), ("sum", pa.float64()), ("count", pa.int64()),
    ("last", pa.float64()), ("last_ts", pa.int64()),
])
"""Times in microseconds since the epoch, UTC."""
OPEN_SCHEMA = pa.schema([*PARTIAL_SCHEMA, ("touched", pa.float64()), ("late", pa.bool_())])
"""`touched`: our clock (seconds) when a reading last came for the bucket."""
THROUGH_SCHEMA = pa.schema([("device_id", pa.string()), ("field", pa.string()),
                            ("through", pa.int64())])
"""Per device and field, the latest bucket closed."""
MARK_SCHEMA = pa.schema([("device_id", pa.string()), ("mark", pa.int64())])
"""Per device, the latest reading time seen (its own clock)."""


@dataclass(frozen=True)
class Level:
    name: str
    """What the table is named after: `telemetry_1m`."""
    size_s: int
    grace_s: float

    @property
    def size_us(self) -> int:
        return self.size_s * 1_000_000


MINUTE = Level("1m", 60, 5.0)
HOUR = Level("1h", 3600, 60.0)
LEVELS = (MINUTE, HOUR)


def numeric_fields(schema: pa.Schema) -> list[str]:
    """The readings' columns a rollup keeps: top-level numbers (booleans and text are not)."""
    return [f.name for f in schema if f.name not in RESERVED
            and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]


def partials(readings: pa.Table, level: Level) -> pa.Table:
    """The window's readings as buckets of `level` (PARTIAL_SCHEMA). Hours are made from the
    minutes, and the minutes of one window are computed once for both levels."""
    minutes = _minutes(readings)
    if level.size_s == MINUTE.size_s or not minutes.num_rows:
        return minutes
    starts = minutes["bucket"].to_numpy(zero_copy_only=False)
    return merge(minutes.set_column(KEYS.index("bucket"), "bucket",
                                    pa.array(starts - np.mod(starts, level.size_us))))


_LAST: list[tuple[tuple[object, ...], pa.Table]] = []
_LOCK = threading.Lock()
_DUCK: list[duckdb.DuckDBPyConnection] = []


def _minutes(readings: pa.Table) -> pa.Table:
    """One DuckDB pass over the window: per device and minute, every numeric field's min, max,
    sum, count and value at the latest reading time (`arg_max`: no sort)."""
    fields = numeric_fields(readings.schema)
    if not fields or not readings.num_rows:
        return PARTIAL_SCHEMA.empty_table()
    key = _fingerprint(readings)
    with _LOCK:
        if _LAST and _LAST[0][0] == key:
            return _LAST[0][1]
        if not _DUCK:
            _DUCK.append(duckdb.connect(config={"threads": 1}))
        con = _DUCK[0]
        size = MINUTE.size_us
        aggregates = []
        for i, name in enumerate(fields):
            value = f'CAST("{name.replace(chr(34), chr(34) * 2)}" AS DOUBLE)'
            # JSON has no NaN: a value is a number or missing (NULL), which these skip.
            aggregates += [f"count({value}) AS c{i}", f"min({value}) AS lo{i}",
                           f"max({value}) AS hi{i}", f"sum({value}) AS s{i}",
                           f"arg_max({value}, t) AS l{i}",
                           f"max(t) FILTER (WHERE {value} IS NOT NULL) AS t{i}"]
        con.register("window_readings", readings.select(["device_id", "ts", *fields]))
        try:
            grouped = con.sql(
                f"SELECT device_id, t // {size} * {size} AS bucket, {', '.join(aggregates)} "
                f"FROM (SELECT *, epoch_us(ts) AS t FROM window_readings) GROUP BY ALL"
            ).to_arrow_table()
        finally:
            con.unregister("window_readings")
        parts = []
        for i, name in enumerate(fields):
            some = grouped.filter(pc.greater(grouped[f"c{i}"], 0))
            if not some.num_rows:
                continue
            parts.append(pa.table({
                "device_id": some["device_id"],
                "field": pa.array([name] * some.num_rows, pa.string()),
                "bucket": some["bucket"], "min": some[f"lo{i}"], "max": some[f"hi{i}"],
                "sum": some[f"s{i}"], "count": some[f"c{i}"], "last": some[f"l{i}"],
                "last_ts": some[f"t{i}"]}).cast(PARTIAL_SCHEMA))
        minutes = pa.concat_tables(parts) if parts else PARTIAL_SCHEMA.empty_table()
        _LAST[:] = [(key, minutes)]
        return minutes


def _fingerprint(readings: pa.Table) -> tuple[object, ...]:
    """Tells the same window handed to both levels apart from another (the pipeline hands each
    output the window's rows after what it holds: the same rows, unless one is behind)."""
    if "seq" not in readings.column_names:
        return (id(readings), readings.num_rows)
    seqs = readings["seq"]
    streams = readings[STREAM_FIELD] if STREAM_FIELD in readings.column_names else None
    return (readings.num_rows, seqs[0].as_py(), seqs[-1].as_py(),
            streams[0].as_py() if streams is not None else None, readings.schema.names)


def merge(rows: pa.Table) -> pa.Table:
    """Rows of the same buckets (PARTIAL_SCHEMA or more) as one row each, exactly as if the
    readings had come together."""
    rows = rows.sort_by([("last_ts", "ascending")])
    grouped = rows.group_by(KEYS, use_threads=False).aggregate([
        ("min", "min"), ("max", "max"), ("sum", "sum"), ("count", "sum"), ("last", "last"),
        ("last_ts", "max")])
    return _shaped(grouped, ["min_min", "max_max", "sum_sum", "count_sum", "last_last",
                             "last_ts_max"], PARTIAL_SCHEMA)


def _shaped(grouped: pa.Table, names: list[str], schema: pa.Schema) -> pa.Table:
    columns = [grouped[k] for k in KEYS] + [grouped[n] for n in names]
    return pa.Table.from_arrays([c.cast(f.type) for c, f in zip(columns, schema, strict=True)],
                                schema=schema)


@dataclass
class Buckets:
    """The open buckets of one level, and what is needed to close them."""

    level: Level
    open: pa.Table
    through: pa.Table
    marks: pa.Table

    @classmethod
    def empty(cls, level: Level) -> Buckets:
        return cls(level, OPEN_SCHEMA.empty_table(), THROUGH_SCHEMA.empty_table(),
                   MARK_SCHEMA.empty_table())

    def step(self, readings: pa.Table | None, now: float) -> tuple[Buckets, pa.Table]:
        """The buckets after `readings` (None: none came), and the rows of those that closed
        (OPEN_SCHEMA: `late` says a table row may hold the bucket already). Pure: `self` is
        left as it was, so a failed write changes nothing."""
        new = partials(readings, self.level) if readings is not None else None
        open_, marks = self.open, self.marks
        if new is not None and new.num_rows:
            open_ = self._merged(new, now)
            seen = new.group_by("device_id", use_threads=False).aggregate([("last_ts", "max")])
            marks = pa.concat_tables([marks, pa.table({
                "device_id": seen["device_id"], "mark": seen["last_ts_max"]},
                schema=MARK_SCHEMA)])
            marks = marks.group_by("device_id", use_threads=False).aggregate([("mark", "max")])
            marks = pa.table({"device_id": marks["device_id"], "mark": marks["mark_max"]},
                             schema=MARK_SCHEMA)
        if not open_.num_rows:
            return Buckets(self.level, open_, self.through, marks), open_
        closing = self._closing(open_, marks, now)
        closed = open_.filter(closing)
        still = open_.filter(pc.invert(closing))
        through = self.through
        if closed.num_rows:
            latest = closed.group_by(["device_id", "field"], use_threads=False).aggregate(
                [("bucket", "max")])
            through = pa.concat_tables([through, pa.table({
                "device_id": latest["device_id"], "field": latest["field"],
                "through": latest["bucket_max"]}, schema=THROUGH_SCHEMA)])
            through = through.group_by(["device_id", "field"], use_threads=False).aggregate(
                [("through", "max")])
            through = pa.table({"device_id": through["device_id"], "field": through["field"],
                                "through": through["through_max"]}, schema=THROUGH_SCHEMA)
        return Buckets(self.level, still, through, marks), closed

    def _merged(self, new: pa.Table, now: float) -> pa.Table:
        """The open buckets with the window's merged in; a bucket new here that was closed
        before is late."""
        fresh = new.append_column("touched", pa.array([now] * new.num_rows, pa.float64()))
        was_closed = fresh.join(self.through, ["device_id", "field"], join_type="left outer")
        late = pc.fill_null(pc.less_equal(was_closed["bucket"], was_closed["through"]), False)
        fresh = was_closed.drop_columns(["through"]).append_column("late", late)
        both = pa.concat_tables([self.open, fresh.select(OPEN_SCHEMA.names).cast(OPEN_SCHEMA)])
        merged = merge(both)
        flags = both.group_by(KEYS, use_threads=False).aggregate(
            [("touched", "max"), ("late", "any")])
        merged = merged.join(flags, KEYS, join_type="left outer")
        return pa.table({**{n: merged[n] for n in PARTIAL_SCHEMA.names},
                         "touched": merged["touched_max"], "late": merged["late_any"]},
                        schema=OPEN_SCHEMA)

    def _closing(self, open_: pa.Table, marks: pa.Table, now: float) -> pa.Array:
        level = self.level
        ends = pc.add(open_["bucket"], level.size_us)
        # A join reorders rows: keep each row's own order by its position.
        index = pa.array(np.arange(open_.num_rows))
        with_marks = open_.select(["device_id"]).append_column("end", ends).append_column(
            "i", index).join(marks, "device_id", join_type="left outer").sort_by("i")
        grace_us = int(level.grace_s * 1e6)
        by_device = pc.greater_equal(with_marks["mark"], pc.add(with_marks["end"], grace_us))
        now_us = int(now * 1e6)
        quiet = pc.and_(pc.less_equal(ends, now_us),
                        pc.less_equal(open_["touched"], now - level.grace_s))
        return pc.fill_null(pc.or_(pc.fill_null(by_device, False), quiet), False)

    def encode(self) -> bytes:
        parts = [to_ipc(t) for t in (self.open, self.through, self.marks)]
        return b"".join(struct.pack("<Q", len(p)) + p for p in parts)

    @classmethod
    def decode(cls, level: Level, data: bytes) -> Buckets:
        if not data:
            return cls.empty(level)
        tables = []
        at = 0
        for _ in range(3):
            (size,) = struct.unpack_from("<Q", data, at)
            at += 8
            tables.append(pa.ipc.open_stream(data[at:at + size]).read_all())
            at += size
        return cls(level, *tables)

