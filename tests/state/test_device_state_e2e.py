"""Device state end to end: what `GET /api/v1/devices/{id}`, `sensorlake devices state` and the
`device_state` table show after readings arrive over HTTP and MQTT, out of order included."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.conftest import Sensorlake

pytestmark = pytest.mark.slow


def state_of(lake: Sensorlake, device: str) -> dict[str, object]:
    reply = httpx.get(f"{lake.url}/api/v1/devices/{device}", timeout=10)
    assert reply.status_code == 200, reply.text
    doc: dict[str, object] = reply.json()
    return doc


def test_out_of_order_readings_keep_the_latest_by_event_time(fresh: Sensorlake) -> None:
    fresh.extra_env["SENSORLAKE_DEVICES__OFFLINE_AFTER"] = "1.5"
    fresh.start()
    fresh.ingest("farm/gh-01/telemetry", {"temperature": 21.5, "humidity": 40,
                                          "ts": "2026-12-01T10:00:00Z"})
    fresh.ingest("farm/gh-01/telemetry", {"temperature": 17.0, "ts": "2026-12-01T09:00:00Z"})
    fresh.mqtt_publish("farm/gh-02/telemetry", [b'{"co2": 412}'])

    gh1 = state_of(fresh, "gh-01")  # at once: the uncommitted readings count already
    assert gh1["values"] == {"temperature": 21.5, "humidity": 40.0}
    assert gh1["last_seen"] == "2026-12-01T10:00:00+00:00"
    assert gh1["first_seen"] == "2026-12-01T09:00:00+00:00"
    assert (gh1["messages"], gh1["readings"], gh1["online"]) == (2, 2, True)
    assert gh1["topic"] == "farm/gh-01/telemetry"

    # committed: the same answer from the store alone
    fresh.wait_rows("SELECT * FROM device_state WHERE device_id = 'gh-02'", 1)
    assert fresh.stop() == 0
    fresh.start()
    assert state_of(fresh, "gh-01")["values"] == {"temperature": 21.5, "humidity": 40.0}
    rows = fresh.rows("SELECT device_id, messages, values.temperature, values.co2 "
                      "FROM device_state ORDER BY device_id")
    assert rows == [["gh-01", 2, 21.5, None], ["gh-02", 1, None, 412.0]]

    cli = json.loads(fresh.cli("devices", "state", "gh-02", "--format", "json").stdout)
    assert cli["values"] == {"co2": 412.0}
    listing = json.loads(fresh.cli("devices", "state", "--format", "json").stdout)
    assert [r[0] for r in listing["rows"]] == ["gh-01", "gh-02"]

    time.sleep(2.0)  # devices.offline_after = 1.5: silent since
    assert state_of(fresh, "gh-01")["online"] is False
    listed = httpx.get(f"{fresh.url}/api/v1/devices", timeout=10).json()
    assert {d["name"]: d["online"] for d in listed["devices"]} == {"gh-01": False,
                                                                  "gh-02": False}
    fresh.ingest("farm/gh-01/telemetry", {"temperature": 22.0, "ts": "2026-12-01T11:00:00Z"})
    again = state_of(fresh, "gh-01")
    assert (again["online"], again["values"], again["messages"]) == (
        True, {"temperature": 22.0}, 3)


def test_an_unknown_device_is_a_404_that_says_where_to_look(fresh: Sensorlake) -> None:
    fresh.start()
    reply = httpx.get(f"{fresh.url}/api/v1/devices/nobody", timeout=10)
    assert reply.status_code == 404
    assert "nobody" in reply.json()["error"]
    assert "/api/v1/devices" in reply.json()["hint"]
    cli = fresh.cli("devices", "state", "nobody", check=False)
    assert cli.returncode != 0
    assert "has sent no reading" in cli.stderr
    tables = httpx.get(f"{fresh.url}/api/v1/tables", timeout=10).json()["tables"]
    assert "device_state" in tables
    assert fresh.rows("SELECT count(*) FROM device_state") == [[0]]
