"""The simulator's profiles: replayable, realistic within documented ranges, anomalies on demand."""

from __future__ import annotations

import math
import re
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from sensorlake.errors import SimulateError
from sensorlake.ingest.identity import IdentityRules, parse_time_us
from sensorlake.simulate.profiles import PROFILES, Fleet

START = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
STEP = timedelta(minutes=17)  # not a divisor of a day, so ticks visit every hour


def readings(fleet: Fleet, ticks: int) -> list[dict[str, Any]]:
    """Every device's readings over `ticks` intervals, dropouts left out."""
    return [
        r
        for i in range(len(fleet.names))
        for t in range(ticks)
        if (r := fleet.reading(i, t, START + t * STEP)) is not None
    ]


def is_anomaly(profile: str, r: dict[str, Any]) -> bool:
    if profile == "smartfarm":
        return bool(r["temperature"] == 400 or r["error_code"] == 1)
    if profile == "edge-host":
        return bool(r["cpu"] == 100 and r["temperature"] > 85)
    return any(isinstance(v, dict) and v["quality"] == "9" for v in r.values())


def measured(value: Any, low: float, high: float) -> None:
    assert set(value) == {"value", "quality"}
    assert value["quality"] == "1"
    assert type(value["value"]) is float
    assert low <= value["value"] <= high


@pytest.mark.parametrize("profile", PROFILES)
def test_same_seed_same_readings_in_any_order(profile: str) -> None:
    calls = [(i, t) for i in range(5) for t in range(40)]
    forward = Fleet(profile, 5, seed=7)
    backward = Fleet(profile, 5, seed=7)
    first = {(i, t): forward.reading(i, t, START + t * STEP) for i, t in calls}
    second = {(i, t): backward.reading(i, t, START + t * STEP) for i, t in reversed(calls)}
    assert first == second
    assert first[(3, 9)] == forward.reading(3, 9, START + 9 * STEP)  # asking again changes nothing


@pytest.mark.parametrize("profile", PROFILES)
def test_another_seed_gives_other_readings(profile: str) -> None:
    assert readings(Fleet(profile, 5, seed=1), 20) != readings(Fleet(profile, 5, seed=2), 20)


@pytest.mark.parametrize("profile", PROFILES)
def test_readings_serialize_with_orjson(profile: str) -> None:
    for r in readings(Fleet(profile, 10, anomaly_rate=0.2), 20):
        assert orjson.loads(orjson.dumps(r)) == r


def test_smartfarm_fields_stay_in_range() -> None:
    fleet = Fleet("smartfarm", 20, anomaly_rate=0)
    sent = readings(fleet, 100)
    assert len(sent) > 1_950  # dropouts are rare
    for r in sent:
        assert set(r) == {"device_id", "ts", "temperature", "humidity", "co2", "error_code"}
        assert r["device_id"] in fleet.names
        assert r["ts"].endswith("Z")
        parse_time_us(r["ts"])
        assert all(type(r[k]) is float for k in ("temperature", "humidity", "co2"))
        assert 10 <= r["temperature"] <= 34
        assert 30 <= r["humidity"] <= 95
        assert 380 <= r["co2"] <= 1500
        assert r["error_code"] == 0


def test_smartfarm_has_rare_dropouts() -> None:
    fleet = Fleet("smartfarm", 50, anomaly_rate=0)
    missing = sum(fleet.reading(i, t, START) is None for i in range(50) for t in range(100))
    assert 5 <= missing <= 60  # ~0.5 % of 5,000


def test_smartfarm_is_warmer_mid_afternoon_with_more_co2_at_night() -> None:
    fleet = Fleet("smartfarm", 30, anomaly_rate=0)

    def at(hour: int) -> list[dict[str, Any]]:
        return [
            r
            for i in range(30)
            for day in range(10)
            if (r := fleet.reading(i, day, START + timedelta(days=day, hours=hour)))
        ]

    afternoon, night = at(14), at(3)
    assert statistics.mean(r["temperature"] for r in afternoon) > 25
    assert statistics.mean(r["temperature"] for r in night) < 19
    assert statistics.mean(r["humidity"] for r in afternoon) < statistics.mean(
        r["humidity"] for r in night
    )
    assert statistics.mean(r["co2"] for r in afternoon) < statistics.mean(r["co2"] for r in night)


def test_smartfarm_drift_is_bounded_over_a_long_run() -> None:
    fleet = Fleet("smartfarm", 3, anomaly_rate=0)
    noon = START + timedelta(hours=12)
    temperatures = [
        r["temperature"] for t in range(0, 200_000, 500) if (r := fleet.reading(0, t, noon))
    ]
    assert max(temperatures) - min(temperatures) < 6  # ±2 °C drift plus noise, never a walk


def test_edge_host_fields_stay_in_range() -> None:
    fleet = Fleet("edge-host", 20, anomaly_rate=0)
    sent = readings(fleet, 100)
    assert len(sent) == 2_000
    for r in sent:
        assert set(r) == {
            "device_id",
            "temperature",
            "cpu",
            "ram",
            "hd",
            "timestamp",
            "timestamp_sent",
        }
        assert all(type(r[k]) is float for k in ("temperature", "cpu", "ram", "hd"))
        assert 35 <= r["temperature"] <= 85
        assert all(0 <= r[k] <= 100 for k in ("cpu", "ram", "hd"))
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d", r["timestamp_sent"])
        parse_time_us(r["timestamp"])


def test_edge_host_timestamp_sent_is_the_hour() -> None:
    at = datetime(2026, 11, 24, 14, 59, 59, tzinfo=UTC)
    r = Fleet("edge-host", 1).reading(0, 0, at)
    assert r is not None
    assert r["timestamp_sent"] == "2026-11-24 14"
    assert r["timestamp"] == "2026-11-24T14:59:59Z"


def test_edge_host_disk_only_fills_up() -> None:
    fleet = Fleet("edge-host", 3)
    used = [r["hd"] for t in range(0, 50_000, 1_000) if (r := fleet.reading(1, t, START))]
    assert used == sorted(used)
    assert used[-1] > used[0]


def test_weather_observations_are_nested_and_plausible() -> None:
    fleet = Fleet("weather", 20, anomaly_rate=0)
    sent = readings(fleet, 100)
    assert len(sent) == 2_000
    conditions = set()
    for r in sent:
        assert isinstance(r["weather_station"], str)
        assert -90 <= r["latitude"] <= 90
        assert -180 <= r["longitude"] <= 180
        assert 0 <= r["elevation"] <= 9_000
        parse_time_us(r["time"])
        measured(r["air_temperature"], -60, 50)
        measured(r["dew_point"], -80, 50)
        assert r["dew_point"]["value"] <= r["air_temperature"]["value"]
        measured(r["wind_speed"], 0, 60)
        measured(r["sea_level_pressure"], 950, 1050)
        measured(r["sky_ceiling"], 0, 22_000)
        measured(r["visibility_distance"], 0, 16_000)
        assert 1 <= len(r["sky_cover_condition"]) <= 3
        for layer in r["sky_cover_condition"]:
            assert set(layer) == {"coverage", "base_height"}
            assert layer["coverage"] in {"CLR", "FEW", "SCT", "BKN", "OVC"}
            assert isinstance(layer["base_height"], int)
        assert isinstance(r["weather_condition"], list)
        for condition in r["weather_condition"]:
            assert set(condition) == {"code", "description"}
            conditions.add(condition["code"])
    assert conditions  # some rain or fog over 2,000 observations


def test_weather_station_position_is_fixed_per_station() -> None:
    fleet = Fleet("weather", 3, seed=5)
    places = {
        (r["weather_station"], r["latitude"], r["longitude"], r["elevation"])
        for t in range(30)
        if (r := fleet.reading(2, t, START + t * STEP))
    }
    assert len(places) == 1
    assert places == {
        (r["weather_station"], r["latitude"], r["longitude"], r["elevation"])
        for r in [Fleet("weather", 3, seed=5).reading(2, 99, START)]
        if r
    }


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_anomaly_rate_is_honoured(profile: str, rate: float) -> None:
    sent = readings(Fleet(profile, 50, seed=3, anomaly_rate=rate), 100)
    share = sum(is_anomaly(profile, r) for r in sent) / len(sent)
    if rate == 0:
        assert share == 0
    else:
        assert 0.07 <= share <= 0.13


def test_smartfarm_anomalies_are_spikes_and_error_codes() -> None:
    sent = readings(Fleet("smartfarm", 50, anomaly_rate=1), 20)
    spikes = sum(r["temperature"] == 400 for r in sent)
    assert 0.35 < spikes / len(sent) < 0.65
    assert all(r["temperature"] == 400 or r["error_code"] == 1 for r in sent)


def test_weather_anomalies_carry_quality_9_and_a_sentinel() -> None:
    for r in readings(Fleet("weather", 10, anomaly_rate=1), 10):
        bad = [v for v in r.values() if isinstance(v, dict) and v["quality"] == "9"]
        assert len(bad) == 1
        assert bad[0]["value"] >= 999.9


@pytest.mark.parametrize("profile", PROFILES)
def test_device_name_is_topic_level_one(profile: str) -> None:
    fleet = Fleet(profile, 150)
    rules = IdentityRules("topic:1")
    for i, name in enumerate(fleet.names):
        topic = fleet.topic(i)
        assert topic.split("/")[1] == name
        assert len(topic.split("/")) == 3
        assert rules.device_id({}, topic) == name


@pytest.mark.parametrize(
    ("profile", "devices", "first", "last"),
    [
        ("smartfarm", 12, "gh-01", "gh-12"),
        ("smartfarm", 120, "gh-001", "gh-120"),
        ("edge-host", 5, "host-001", "host-005"),
        ("edge-host", 1_500, "host-0001", "host-1500"),
        ("weather", 40, "ws-001", "ws-040"),
    ],
)
def test_names_are_zero_padded_to_the_count(
    profile: str, devices: int, first: str, last: str
) -> None:
    names = Fleet(profile, devices).names
    assert (len(names), names[0], names[-1]) == (devices, first, last)
    assert len(set(names)) == devices


def test_topics_per_profile() -> None:
    assert Fleet("smartfarm", 12).topic(0) == "farm/gh-01/telemetry"
    assert Fleet("edge-host", 3).topic(0) == "edge/host-001/metrics"
    assert Fleet("weather", 3).topic(0) == "weather/ws-001/observation"


def test_unknown_profile_lists_the_choices() -> None:
    with pytest.raises(SimulateError, match="unknown profile 'farm'") as caught:
        Fleet("farm", 3)
    assert all(p in str(caught.value) for p in PROFILES)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"devices": 0}, "devices must be between 1 and 100,000, not 0"),
        ({"devices": 100_001}, "devices must be between 1 and 100,000"),
        ({"anomaly_rate": -0.1}, "anomaly_rate must be between 0 and 1"),
        ({"anomaly_rate": 1.5}, "anomaly_rate must be between 0 and 1"),
        ({"anomaly_rate": math.nan}, "anomaly_rate must be between 0 and 1"),
    ],
)
def test_bad_fleet_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"profile": "smartfarm", "devices": 3, **kwargs}
    with pytest.raises(SimulateError, match=re.escape(message)):
        Fleet(**args)


def test_bad_reading_arguments_are_refused() -> None:
    fleet = Fleet("weather", 3)
    with pytest.raises(SimulateError, match=r"device index 3 is outside 0\.\.2"):
        fleet.reading(3, 0, START)
    with pytest.raises(SimulateError, match="device index -1"):
        fleet.topic(-1)
    with pytest.raises(SimulateError, match="tick must be 0 or more"):
        fleet.reading(0, -1, START)
    with pytest.raises(SimulateError, match="has no timezone"):
        fleet.reading(0, 0, datetime(2026, 1, 1))  # a naive time
