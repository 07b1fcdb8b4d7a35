"""The rollup tables and the chart API, on a real pipeline: buckets close and land once, a late
reading updates the bucket it belongs to, a kill at any point counts nothing twice, a rebuild
gives what the stream built, and the chart picks its source so that no series is too long."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import pytest

from tests.conftest import Sensorlake
from tests.rollup.checks import chart, check_rollups

MINUTE = 60


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _send(lake: Sensorlake, device: str, readings: list[dict[str, object]]) -> None:
    for at in range(0, len(readings), 500):
        response = lake.ingest(f"farm/{device}/telemetry", readings[at:at + 500])
        assert response.status_code == 200, response.text


def _minute_ago(minutes: int) -> float:
    now = time.time()
    return now - now % MINUTE - minutes * MINUTE


def test_closed_buckets_land_once_and_a_late_reading_updates_its_bucket(
        fresh: Sensorlake) -> None:
    fresh.start()
    start = _minute_ago(5)
    _send(fresh, "gh-01", [{"ts": _iso(start + i), "temperature": 20 + (i % 60) / 10}
                           for i in range(180)])
    sql = ("SELECT epoch(ts)::BIGINT, count, min, max, last FROM telemetry_1m "
           "WHERE device_id = 'gh-01' AND field = 'temperature' ORDER BY 1")
    rows = fresh.wait_rows(sql, 3, timeout=30)
    assert rows == [[int(start) + m * MINUTE, 60, 20.0, 25.9, 25.9] for m in range(3)]

    _send(fresh, "gh-01", [{"ts": _iso(start + 30.5), "temperature": 400}])  # late
    deadline = time.monotonic() + 30
    while fresh.rows(sql)[0][1] != 61 and time.monotonic() < deadline:
        time.sleep(0.2)
    rows = fresh.rows(sql)
    assert rows[0] == [int(start), 61, 20.0, 400.0, 25.9]  # last by reading time, not arrival
    assert len(rows) == 3  # updated, not a second row for the bucket
    check_rollups(fresh, "temperature", start - 3600)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["before-commit", "before-swap", "after-checkpoint",
                                   "between-outputs", "after-commit"])
def test_a_kill_at_each_fault_point_counts_each_reading_once(fresh: Sensorlake,
                                                             point: str) -> None:
    """Readings of minutes past close buckets at every commit, so every kill lands between a
    checkpoint and its table commit, or before either."""
    fresh.flush_interval = 0.3
    fresh.extra_env["SENSORLAKE_FAULTS"] = point
    fresh.start()
    start = _minute_ago(60)
    marker = fresh.data_dir / f"fault-{point}.fired"
    sent = 0
    for device in ("gh-01", "gh-02"):
        for chunk in range(12):  # five minutes of readings per request, one a second
            readings = [{"ts": _iso(start + (chunk * 300) + i), "v": chunk * 300 + i}
                        for i in range(300)]
            while True:
                try:
                    response = fresh.ingest(f"farm/{device}/telemetry", readings)
                except httpx.HTTPError:
                    response = None
                if response is not None and response.status_code == 200:
                    break
                time.sleep(0.2)  # the worker restarting: ingest stays up, but be patient
            sent += len(readings)
            time.sleep(0.1)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, f"the worker never reached {point}"
        time.sleep(0.1)
    total = fresh.wait_rows("SELECT 1 FROM telemetry WHERE v IS NOT NULL", sent, timeout=60)
    assert len(total) == sent
    check_rollups(fresh, "v", start - 3600, timeout=40)
    one = fresh.rows("SELECT count(*), count(DISTINCT (device_id, ts)) FROM telemetry_1m "
                     "WHERE field = 'v'")
    assert one[0][0] == one[0][1]  # one row per bucket


def test_rebuild_gives_what_the_stream_built_and_refuses_while_running(
        fresh: Sensorlake) -> None:
    fresh.start()
    start = _minute_ago(120)
    _send(fresh, "gh-07", [{"ts": _iso(start + 7 * i), "co2": 400 + i % 50}
                           for i in range(1000)])
    fresh.wait_rows("SELECT 1 FROM telemetry WHERE co2 IS NOT NULL", 1000, timeout=30)
    check_rollups(fresh, "co2", start - 3600)
    sql = "SELECT * FROM telemetry_1m WHERE field = 'co2' ORDER BY device_id, ts"
    built = fresh.wait_rows(sql, 110, timeout=30)
    refused = fresh.cli("rollups", "rebuild", check=False)
    assert refused.returncode != 0
    assert "sensorlake is running" in refused.stderr
    fresh.stop()

    done = fresh.cli("rollups", "rebuild", "--format", "json")
    assert '"telemetry_1m"' in done.stdout
    fresh.start()
    assert fresh.rows(sql)[:len(built)] == built
    check_rollups(fresh, "co2", start - 3600)
    _send(fresh, "gh-07", [{"ts": _iso(start + 5), "co2": 9999}])  # the stream goes on
    deadline = time.monotonic() + 30
    while fresh.rows("SELECT max(max) FROM telemetry_1m WHERE field = 'co2'")[0][0] != 9999 \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    check_rollups(fresh, "co2", start - 3600)


def test_the_chart_picks_raw_minutes_or_hours_by_range_and_stays_under_2000_points(
        fresh: Sensorlake) -> None:
    fresh.start()
    now = time.time()
    week = 7 * 86_400
    for device in ("gh-01", "gh-02"):  # a reading every 2 minutes for 8 days, one a second
        old = [{"ts": _iso(now - 8 * 86_400 + 120 * i), "temperature": 20 + (i % 30)}
               for i in range(8 * 720 - 30)]
        recent = [{"ts": _iso(now - 1800 + i), "temperature": 21.0} for i in range(1800)]
        _send(fresh, device, old + recent)
    expected = len(old) + len(recent)
    fresh.wait_rows("SELECT 1 FROM telemetry WHERE temperature IS NOT NULL", 2 * expected,
                    timeout=60)

    def drawn(span: float, **more: object) -> dict[str, object]:
        doc = chart(fresh, field="temperature", **{"from": now - span, "to": now + 1}, **more)
        assert all(len(s["t"]) <= 2000 for s in doc["series"]), doc["source"]
        return doc

    assert drawn(900)["source"] == "raw"
    day = drawn(86_400)
    assert day["source"] == "1m"
    assert {s["device_id"] for s in day["series"]} == {"gh-01", "gh-02"}
    seven = drawn(week)
    assert (seven["source"], seven["step_s"]) == ("1h", 3600)
    # Hours: the first bucket holds readings from before the range's start too.
    first_hour = now - week - (now - week) % 3600
    counted = fresh.rows(f"SELECT count(*) FROM telemetry WHERE ts >= to_timestamp({first_hour})"
                         f" AND ts < to_timestamp({now + 1})")[0][0]
    deadline = time.monotonic() + 20
    while sum(sum(s["count"]) for s in seven["series"]) != counted \
            and time.monotonic() < deadline:
        time.sleep(0.5)
        seven = drawn(week)
    assert sum(sum(s["count"]) for s in seven["series"]) == counted
    raw_week = drawn(week, source="raw")
    assert raw_week["source"] == "raw"
    assert raw_week["step_s"] >= 303  # grouped to fit
    one = drawn(week, devices="gh-02")
    assert [s["device_id"] for s in one["series"]] == ["gh-02"]


@pytest.mark.parametrize(("params", "error"), [
    ({"field": "nope"}, "no numeric field 'nope'"),
    ({}, "'field' is missing"),
    ({"field": "temperature", "from": "2026-12-02T10:00:00Z", "to": "2026-12-01T10:00:00Z"},
     "'from' must be before 'to'"),
    ({"field": "temperature", "from": "yesterday"}, "neither an ISO 8601 time"),
    ({"field": "temperature", "source": "5m"}, "source '5m' is not one of"),
    ({"field": "temperature", "points": "1"}, "'points' must be 10 to 10000"),
])
def test_a_bad_chart_request_says_what_to_change(lake: Sensorlake, params: dict[str, str],
                                                 error: str) -> None:
    lake.ingest("farm/chart-errors/telemetry", {"temperature": 20})
    lake.wait_rows("SELECT 1 FROM telemetry WHERE device_id = 'chart-errors'", 1)
    response = httpx.get(f"{lake.url}/api/v1/chart", params=params, timeout=10)
    assert response.status_code == 400
    assert error in response.json()["error"]
