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
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.lake.tables import RESERVED
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
    """The window's readings as buckets (PARTIAL_SCHEMA)."""
    fields = numeric_fields(readings.schema)
    if not fields or not readings.num_rows:
        return PARTIAL_SCHEMA.empty_table()
    ts = readings["ts"].cast(pa.int64()).to_numpy(zero_copy_only=False)
    bucket = pa.array(ts - np.mod(ts, level.size_us))
    device = readings["device_id"]
    tss = pa.array(ts)
    parts = []
    for name in fields:
        values = readings[name].cast(pa.float64())
        keep = pc.and_(pc.is_valid(values), pc.invert(pc.is_nan(values)))
        keep = pc.fill_null(keep, False)
        if not pc.any(keep).as_py():
            continue
        parts.append(pa.table({
            "device_id": device.filter(keep), "field": pa.array([name] * pc.sum(keep).as_py()),
            "bucket": bucket.filter(keep), "v": values.filter(keep), "ts": tss.filter(keep)}))
    if not parts:
        return PARTIAL_SCHEMA.empty_table()
    long = pa.concat_tables(parts).sort_by([("ts", "ascending")])
    grouped = long.group_by(KEYS, use_threads=False).aggregate([
        ("v", "min"), ("v", "max"), ("v", "sum"), ("v", "count"), ("v", "last"), ("ts", "max")])
    return _shaped(grouped, ["v_min", "v_max", "v_sum", "v_count", "v_last", "ts_max"],
                   PARTIAL_SCHEMA)


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

