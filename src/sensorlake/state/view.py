"""Device state as users read it: per device, as JSON (API, CLI) or as the `device_state` table
of SQL queries — with the readings the store has not committed yet merged in, so that a reading
shows in its device's state within a second, as it does in `telemetry`.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.config import Config
from sensorlake.lake.records import after
from sensorlake.state.records import (
    DEVICE_STATE,
    TELEMETRY_SOURCE,
    DeviceState,
    Summarizer,
    merge_all,
    to_time,
    values_json,
)
from sensorlake.state.store import StateStore

_summarizer: Summarizer | None = None


def current(store: StateStore, tail: pa.Table | None = None, device: str | None = None
            ) -> list[DeviceState]:
    """The store's records, with `tail` (uncommitted telemetry readings) applied on top."""
    records = store.read(device)
    if tail is None or not tail.num_rows:
        return records
    position = store.position(DEVICE_STATE)
    fresh = after(tail, position) if position is not None else tail
    if device is not None and fresh.num_rows:
        fresh = fresh.filter(pc.equal(fresh["device_id"], device))
    if not fresh.num_rows:
        return records
    global _summarizer
    if _summarizer is None:
        _summarizer = Summarizer()
    merged = {(r.device_id, r.source): r for r in records}
    merge_all(merged, _summarizer.readings(fresh))
    return sorted(merged.values(), key=lambda r: (r.device_id, r.source != TELEMETRY_SOURCE,
                                                  r.source))


def _times(state: DeviceState) -> dict[str, Any]:
    return {"last_seen": to_time(state.ts), "last_received": to_time(state.last_received),
            "first_seen": to_time(state.first_ts), "first_received": to_time(state.first_received)}


def devices(records: list[DeviceState], config: Config, now: float | None = None
            ) -> list[dict[str, Any]]:
    """One document per device: its telemetry record, and each state rule's latest row."""
    now_us = int((time.time() if now is None else now) * 1_000_000)
    offline_us = int(config.devices.offline_after * 1_000_000)
    docs: dict[str, dict[str, Any]] = {}
    for state in records:
        doc = docs.setdefault(state.device_id, {"device_id": state.device_id, "online": None,
                                                "values": {}, "rules": {}})
        if state.source == TELEMETRY_SOURCE:
            doc.update(online=now_us - state.last_received <= offline_us, topic=state.topic,
                       **_times(state), messages=state.messages, readings=state.readings,
                       values=state.values, seq=state.seq, stream=state.stream)
        else:
            doc["rules"][state.source] = {"values": state.values, **_times(state),
                                          "rows": state.readings}
    return list(docs.values())


_BASE = pa.schema([
    ("device_id", pa.string()), ("online", pa.bool_()), ("topic", pa.string()),
    ("last_seen", pa.timestamp("us", "UTC")), ("last_received", pa.timestamp("us", "UTC")),
    ("first_seen", pa.timestamp("us", "UTC")), ("first_received", pa.timestamp("us", "UTC")),
    ("messages", pa.int64()), ("readings", pa.int64()),
])


def table(records: list[DeviceState], config: Config) -> pa.Table:
    """The `device_state` table of SQL queries: a row per device, its latest values in the
    struct column `values`, each state rule's latest row in `rules.<rule>`."""
    docs = [d for d in devices(records, config) if "topic" in d]
    base = pa.Table.from_pylist([{k: d.get(k) for k in _BASE.names} for d in docs], _BASE)
    columns = {"values": [d["values"] or None for d in docs],
               "rules": [{name: got["values"] for name, got in d["rules"].items()} or None
                         for d in docs]}
    for column, items in columns.items():
        if not any(items):
            continue
        try:
            values = pa.array(items)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # one field of several types: as JSON
            values = pa.array([None if v is None else values_json(v) for v in items])
        base = base.append_column(column, values)
    return base
