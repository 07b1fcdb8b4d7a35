"""Devices as users see them: the registry joined with when each last published.

A device that publishes without being registered (plain MQTT on loopback, HTTP ingest) is listed
too, so the list answers "what is sending data" as well as "what may connect".
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from sensorlake.config import Config
from sensorlake.devices.registry import Registry
from sensorlake.errors import SensorlakeError
from sensorlake.query.engine import QueryEngine

COLUMNS = ["name", "status", "attributes", "last_seen", "readings", "certificate_expires",
           "gateway"]
"""`gateway` comes last so that scripts reading columns by position keep working. It is None
for an unregistered device: nothing checks whom such a device writes as, so the question has no
answer."""

_LAST_SEEN = (
    "SELECT device_id, max(received_at) AS last_seen, count(*) AS readings FROM telemetry "
    "WHERE device_id IS NOT NULL GROUP BY device_id"
)


def device_rows(
    config: Config, engine: QueryEngine, tail: pa.Table | None = None
) -> list[list[Any]]:
    try:
        seen = {row[0]: (row[1], row[2]) for row in engine.execute(
            _LAST_SEEN, tails={"telemetry": tail}).rows}
    except SensorlakeError:
        seen = {}  # no lake yet: nothing has been seen
    rows: list[list[Any]] = []
    for device in Registry(config.data_dir).devices():
        last, count = seen.pop(device.name, (None, 0))
        rows.append([device.name, device.status, device.attributes, last, count,
                     device.cert_not_after, device.gateway])
    for name, (last, count) in sorted(seen.items()):
        rows.append([name, "unregistered", {}, last, count, None, None])
    return rows
