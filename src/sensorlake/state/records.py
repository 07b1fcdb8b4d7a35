"""What device state holds of a device, and how a batch's readings move it on.

One record per device and *source*: `telemetry` (every reading of the device) and each rule
with `state = true` (its result rows, keyed by the device of the reading they came from). A
record keeps the latest reading by event time, all its fields, with first and last seen and the
counts. Merging is the one place that decides what "latest" means, for the store and for the
fresh tail a query adds on top of it: a late, out-of-order reading adds to the counts and the
first/last arrival times, and never overwrites a reading with a newer event time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from sensorlake.lake.tables import BASE_COLUMNS
from sensorlake.sandbox import sealed_duckdb

DEVICE_STATE = "device_state"
"""The output's name, and the table SQL queries read it by."""
TELEMETRY_SOURCE = "telemetry"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HIDDEN = frozenset({*BASE_COLUMNS, "__row", "__device", "__topic", "__received"})


@dataclass(frozen=True)
class DeviceState:
    device_id: str
    source: str
    """`telemetry`, or the name of the rule whose rows these are."""
    topic: str | None
    ts: int
    """Event time of the latest reading, µs since the epoch."""
    received_at: int
    """When the latest reading arrived, µs."""
    seq: int
    stream: str
    values: dict[str, Any]
    """The latest reading's fields (its payload; a rule's selected columns), nulls left out."""
    first_ts: int
    first_received: int
    last_received: int
    """The latest arrival of any reading, the latest by event time or not: what online means."""
    messages: int
    readings: int

    def merged(self, newer: DeviceState) -> DeviceState:
        """This record with a later batch's summary of the same device and source applied."""
        latest = newer if (newer.ts, newer.received_at) >= (self.ts, self.received_at) else self
        return replace(
            latest,
            first_ts=min(self.first_ts, newer.first_ts),
            first_received=min(self.first_received, newer.first_received),
            last_received=max(self.last_received, newer.last_received),
            messages=self.messages + newer.messages,
            readings=self.readings + newer.readings,
        )


def merge_all(into: dict[tuple[str, str], DeviceState], summaries: list[DeviceState]) -> None:
    for summary in summaries:
        key = (summary.device_id, summary.source)
        held = into.get(key)
        into[key] = summary if held is None else held.merged(summary)


def to_time(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def _us(value: datetime | None) -> int:
    if value is None:
        return 0
    return (value - _EPOCH) // timedelta(microseconds=1)


_SUMMARY = """
SELECT {device} AS device, arg_max(__row, ({ts}, seq, __row)) AS latest, count(*) AS readings,
       count(DISTINCT (stream, seq)) AS messages, min({ts}) AS first_ts,
       min({received}) AS first_received, max({received}) AS last_received
FROM summarized WHERE {device} IS NOT NULL GROUP BY 1
"""

_RULE_ROWS = """
SELECT m.__device, m.__topic, m.__received, r.* FROM results r
JOIN (SELECT DISTINCT stream AS __stream, seq AS __seq, device_id AS __device,
             topic AS __topic, received_at AS __received FROM readings) m
  ON r.stream = m.__stream AND r.seq = m.__seq
"""


class Summarizer:
    """Per device, what a batch of rows brings: one DuckDB aggregate, never a loop over rows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._db = sealed_duckdb()

    def readings(self, rows: pa.Table) -> list[DeviceState]:
        """Telemetry's records from decoded readings."""
        if not rows.num_rows or "device_id" not in rows.column_names:
            return []
        return self._summarize(rows, TELEMETRY_SOURCE, device="device_id", topic="topic",
                               received="received_at")

    def rule_rows(self, rule: str, results: pa.Table, readings: pa.Table) -> list[DeviceState]:
        """A rule's records from its result rows (`ts`, `seq`, `stream` and what it selects),
        each keyed by the device of the reading it came from."""
        if not results.num_rows or "seq" not in results.column_names:
            return []
        with self._lock:
            con = self._db.cursor()
            try:
                con.register("results", results)
                con.register("readings", readings)
                joined = con.sql(_RULE_ROWS).to_arrow_table()
            finally:
                con.close()
        if "ts" not in joined.column_names:
            joined = joined.append_column("ts", joined["__received"])
        return self._summarize(joined, rule, device="__device", topic="__topic",
                               received="__received")

    def _summarize(self, rows: pa.Table, source: str, *, device: str, topic: str,
                   received: str) -> list[DeviceState]:
        rows = rows.append_column("__row", pa.array(np.arange(rows.num_rows, dtype=np.int64)))
        sql = _SUMMARY.format(device=device, ts="ts", received=received)
        with self._lock:
            con = self._db.cursor()
            try:
                con.register("summarized", rows)
                groups = con.sql(sql).fetchall()
            finally:
                con.close()
        latest = rows.take(pa.array([g[1] for g in groups], pa.int64())).to_pylist()
        states = []
        for (dev, _, readings, messages, first_ts, first_rx, last_rx), row in zip(
                groups, latest, strict=True):
            states.append(DeviceState(
                device_id=str(dev), source=source, topic=row.get(topic),
                ts=_us(row.get("ts")), received_at=_us(row.get(received)),
                seq=int(row.get("seq") or 0), stream=str(row.get("stream") or ""),
                values={k: v for k, v in row.items() if k not in _HIDDEN and v is not None},
                first_ts=_us(first_ts), first_received=_us(first_rx),
                last_received=_us(last_rx), messages=int(messages), readings=int(readings)))
        return states


def values_json(values: dict[str, Any]) -> str:
    return orjson.dumps(values, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
