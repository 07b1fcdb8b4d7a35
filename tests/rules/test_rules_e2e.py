"""The two AWS IoT rules this project replaces, end to end: NOAA-style weather readings published
over MQTT land in each rule's own table, values checked, next to telemetry."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Sensorlake

pytestmark = pytest.mark.slow

RULES = '''
[[rules]]
name = "all_with_topic"
sql = "SELECT topic() AS topic, * FROM 'iot-test-topic/+'"
table = "delivered"

[[rules]]
name = "cold_stations"
sql = """SELECT weather_station, latitude, longitude, elevation, time,
       air_temperature.value AS air_temperature_value,
       air_temperature.quality AS air_temperature_quality,
       wind_speed.value AS wind_speed_value, weather_condition, sky_cover_condition
       FROM 'sensor/weather' WHERE air_temperature.value < -5"""
table = "cold_weather"
state = true
'''


def weather(station: str, temperature: float, at: str) -> bytes:
    return json.dumps({
        "device_id": station, "weather_station": station, "latitude": 46.5, "longitude": 7.9,
        "elevation": 1834, "time": at, "ts": at,
        "air_temperature": {"value": temperature, "quality": "1"},
        "wind_speed": {"value": 3.5, "quality": "1"},
        "weather_condition": ["snow", "fog"], "sky_cover_condition": "OVC"}).encode()


def wait_count(lake: Sensorlake, table: str, count: int, timeout: float = 20) -> None:
    """Until the rule's table holds `count` rows (its columns come with its first commit)."""
    deadline = time.monotonic() + timeout
    while (got := lake.rows(f"SELECT count(*) FROM {table}")[0][0]) < count:
        assert time.monotonic() < deadline, (table, got, lake.log()[-3000:])
        time.sleep(0.1)


@pytest.fixture
def ruled(fresh: Sensorlake, tmp_path: Path) -> Sensorlake:
    config = tmp_path / "sensorlake.toml"
    config.write_text(RULES)
    fresh.extra_args = ("--config", str(config))
    return fresh.start()


def test_both_aws_rules_fill_their_tables_from_mqtt(ruled: Sensorlake) -> None:
    ruled.mqtt_publish("sensor/weather", [
        weather("jungfraujoch", -12.5, "2026-01-10T06:00:00Z"),
        weather("bern", 2.0, "2026-01-10T06:00:00Z"),
        weather("saentis", -7.25, "2026-01-10T06:10:00Z")])
    ruled.mqtt_publish("iot-test-topic/gh-1", [b'{"temperature": 21.5, "device_id": "gh-1"}'])
    ruled.mqtt_publish("elsewhere/gh-2", [b'{"temperature": 99, "device_id": "gh-2"}'])

    wait_count(ruled, "cold_weather", 2)
    cold = ruled.rows(
        "SELECT weather_station, air_temperature_value, air_temperature_quality, "
        "wind_speed_value, weather_condition, sky_cover_condition, elevation, time "
        "FROM cold_weather ORDER BY weather_station")
    assert cold == [
        ["jungfraujoch", -12.5, "1", 3.5, ["snow", "fog"], "OVC", 1834, "2026-01-10T06:00:00Z"],
        ["saentis", -7.25, "1", 3.5, ["snow", "fog"], "OVC", 1834, "2026-01-10T06:10:00Z"]]
    wait_count(ruled, "delivered", 1)
    delivered = ruled.rows("SELECT topic, temperature, device_id FROM delivered")
    assert delivered == [["iot-test-topic/gh-1", 21.5, "gh-1"]]
    # telemetry holds everything, as before
    assert ruled.wait_rows("SELECT count(*) FROM telemetry", 1) == [[5]]
    listed = json.loads(ruled.cli("tables", "--format", "json").stdout)
    names = {row[0] for row in listed["rows"]}
    assert {"cold_weather", "delivered", "telemetry", "device_state"} <= names

    # device state, as the DynamoDB table held it: every station's latest reading, and the
    # cold-station rule's row for the stations it matched (state = true)
    states = {}
    for station in ("jungfraujoch", "bern", "saentis"):
        reply = httpx.get(f"{ruled.url}/api/v1/devices/{station}", timeout=10)
        assert reply.status_code == 200, reply.text
        states[station] = reply.json()
    assert states["bern"]["values"]["air_temperature"] == {"value": 2.0, "quality": "1"}
    assert states["bern"]["rules"] == {}
    cold = states["saentis"]["rules"]["cold_stations"]
    assert cold["values"]["air_temperature_value"] == -7.25
    assert cold["values"]["weather_condition"] == ["snow", "fog"]
    assert cold["last_seen"] == "2026-01-10T06:10:00+00:00"
    deadline = time.monotonic() + 20
    while not (rows := ruled.rows(
            "SELECT device_id, rules.cold_stations.air_temperature_value FROM device_state "
            "WHERE rules IS NOT NULL ORDER BY 1")) and time.monotonic() < deadline:
        time.sleep(0.2)  # a rule's state comes with the worker's commit
    assert rows == [["jungfraujoch", -12.5], ["saentis", -7.25]]


def test_a_rule_starts_at_the_next_reading_and_restarts_exactly_once(ruled: Sensorlake) -> None:
    ruled.mqtt_publish("sensor/weather", [weather(f"s{i}", -10.0 - i, "2026-01-10T06:00:00Z")
                                          for i in range(20)])
    sql = "SELECT count(*), count(DISTINCT weather_station) FROM cold_weather"
    wait_count(ruled, "cold_weather", 20)
    assert ruled.rows(sql) == [[20, 20]]
    ruled.stop()
    ruled.start()
    ruled.mqtt_publish("sensor/weather", [weather("s99", -30.0, "2026-01-10T07:00:00Z")])
    wait_count(ruled, "cold_weather", 21)
    time.sleep(1.5)  # a second commit would have landed by now
    assert ruled.rows(sql) == [[21, 21]]


def test_a_rule_that_fails_on_a_reading_dead_letters_it_and_the_rest_carries_on(
        fresh: Sensorlake, tmp_path: Path) -> None:
    config = tmp_path / "sensorlake.toml"
    config.write_text(RULES + '''
[[rules]]
name = "unpack"
sql = "SELECT decode(packed, 'base64') AS text FROM 'blobs/+'"
table = "unpacked"
''')
    fresh.extra_args = ("--config", str(config))
    fresh.start()
    fresh.mqtt_publish("blobs/a", [json.dumps({"packed": p}).encode()
                                   for p in ("aGk=", "not base64!", "dGhlcmU=")])
    fresh.mqtt_publish("sensor/weather", [weather("jungfraujoch", -12.5, "2026-01-10T06:00:00Z")])
    wait_count(fresh, "unpacked", 2)
    assert fresh.rows("SELECT text FROM unpacked ORDER BY seq") == [["hi"], ["there"]]
    dead = fresh.wait_rows("SELECT reason, raw FROM dead_letter", 1, timeout=20)
    assert len(dead) == 1, dead
    reason, raw = dead[0]
    assert "rule 'unpack'" in reason
    assert "base64" in reason
    assert "not base64!" in raw
    wait_count(fresh, "cold_weather", 1)  # the other rules and telemetry carry on
    assert fresh.rows("SELECT count(*) FROM telemetry") == [[4]]
    listed = {r["name"]: r for r in httpx.get(f"{fresh.url}/api/v1/rules",
                                                timeout=10).json()["rules"]}
    assert set(listed) == {"all_with_topic", "cold_stations", "unpack"}
    unpack = listed["unpack"]
    assert (unpack["matched"], unpack["emitted"], unpack["errors"]) == (3, 2, 1)
    assert "base64" in unpack["last_error"]
    assert unpack["running"] is True
    assert unpack["actions"] == ["table"]
    assert listed["cold_stations"]["emitted"] == 1
