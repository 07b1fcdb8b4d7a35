"""`sensorlake simulate`, `POST /api/v1/simulate` and `up --demo` against a real pipeline."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import Sensorlake

pytestmark = pytest.mark.slow


def test_simulate_over_mqtt_lands_every_acknowledged_reading(lake: Sensorlake) -> None:
    done = lake.cli("simulate", "--profile", "edge-host", "--devices", "3", "--interval", "0.05",
                    "--count", "4", "--via", "mqtt", "--seed", "7", "--anomaly-rate", "0",
                    "--mqtt-port", str(lake.mqtt_port))
    assert "sent 12 readings, acked 12, failed 0" in done.stdout
    rows = lake.wait_rows("SELECT device_id, count(*), min(cpu) >= 0, max(cpu) <= 100 FROM "
                          "telemetry WHERE topic LIKE 'edge/host-%' GROUP BY 1 ORDER BY 1", 3)
    assert rows == [[f"host-00{i}", 4, True, True] for i in (1, 2, 3)]


def test_simulated_weather_over_http_keeps_its_nested_fields(fresh: Sensorlake) -> None:
    # A lake of its own: in the shared one, other tests made air_temperature a plain number.
    fresh.start()
    done = fresh.cli("simulate", "--profile", "weather", "--devices", "2", "--rate", "100",
                     "--count", "5", "--via", "http", "--http-url", fresh.url)
    assert "sent 10 readings, acked 10, failed 0" in done.stdout
    rows = fresh.wait_rows("SELECT count(*) FROM telemetry WHERE topic LIKE 'weather/%' "
                           "AND air_temperature.value IS NOT NULL "
                           "AND len(sky_cover_condition) >= 1", 1)
    assert rows == [[10]]
    assert fresh.rows("SELECT count(*) FROM dead_letter") == [[0]]


def test_simulate_explains_a_target_that_is_not_there(lake: Sensorlake, tmp_path: Path) -> None:
    done = lake.cli("simulate", "--count", "1", "--mqtt-port", "1", check=False)
    assert done.returncode == 1
    assert "cannot connect to MQTT at 127.0.0.1:1" in done.stderr
    bad = lake.cli("simulate", "--count", "0", check=False)
    assert bad.returncode == 1
    assert "count must be 1 to" in bad.stderr


def _api(lake: Sensorlake, method: str, path: str, body: object = None) -> httpx.Response:
    return httpx.request(method, f"{lake.url}/api/v1/simulate{path}", json=body, timeout=30)


def test_the_simulate_api_starts_reports_and_stops(lake: Sensorlake) -> None:
    started = _api(
        lake,
        "POST",
        "",
        {
            "count": 3,
            "interval": 0.1,
            "profile": "smartfarm",
            "devices": 2,
            "seed": 3,
            "anomaly_rate": 0,
        },
    )
    assert started.status_code == 201, started.text
    sim_id = started.json()["id"]
    deadline = time.monotonic() + 15
    while not (state := _api(lake, "GET", f"/{sim_id}").json())["done"]:
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    assert state["acked"] == state["sent"] > 0
    assert state["failed"] == 0

    endless = _api(lake, "POST", "", {"duration": 600, "interval": 0.5, "devices": 1}).json()
    stopped = _api(lake, "DELETE", f"/{endless['id']}")
    assert stopped.status_code == 200
    assert stopped.json()["stopped"] is True
    assert stopped.json()["done"] is True

    for body, message in [
        ({"count": -1}, "count must be 1 to"),
        ({"count": 1, "devices": 1_000_000}, "devices must be 1 to"),
        ({"count": 1, "profile": "volcano"}, "unknown profile 'volcano'"),
        ({"count": 1, "colour": "red"}, "unknown field(s): colour"),
        ({"interval": 1}, "give count or duration"),
        ({"count": "12"}, "count must be an integer"),
        ([1, 2], "must be a JSON object"),
    ]:
        refused = _api(lake, "POST", "", body)
        assert refused.status_code == 400, body
        assert message in refused.json()["error"], (body, refused.json())
    assert _api(lake, "GET", "/nope").status_code == 404


def test_up_demo_shows_data_moving(tmp_path: Path) -> None:
    demo = Sensorlake(tmp_path / "data", args=("--demo",)).start()
    try:
        rows = demo.wait_rows("SELECT DISTINCT device_id FROM telemetry ORDER BY 1", 6, timeout=15)
        assert len(rows) == 6
    finally:
        demo.stop()


def test_bench_reports_rate_acks_and_latency(lake: Sensorlake) -> None:
    done = lake.cli("bench", "--connections", "2", "--rate", "300", "--duration", "2",
                    "--profile", "weather", "--mqtt-port", str(lake.mqtt_port), "-f", "json")
    result = orjson.loads(done.stdout)
    assert result["sent"] == result["acked"] >= 550
    assert result["failed"] == 0
    assert 200 <= result["rate"] <= 320
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] < 5000
