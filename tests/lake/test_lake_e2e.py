"""What the lake writer guarantees, checked on a running pipeline through SQL."""

from __future__ import annotations

import time

import orjson

from tests.conftest import Sensorlake


def _committed(lake: Sensorlake, sql: str, count: int, timeout: float = 15.0) -> None:
    """Wait until the committed lake (not just the fresh tail) holds `count` rows for `sql`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = lake.query(sql)
        if result["uncommitted_rows"] == 0 and len(result["rows"]) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"not committed in {timeout}s: {lake.query(sql)}")


def test_schema_evolves_mid_stream(lake: Sensorlake, device: str) -> None:
    topic = f"farm/{device}/telemetry"
    lake.ingest(topic, {"temperature": 20})
    _committed(lake, f"SELECT * FROM telemetry WHERE device_id = '{device}'", 1)
    field = f"ph_{device.replace('-', '_')}"
    lake.ingest(topic, {"temperature": 21, field: 6.5})
    sql = f"SELECT temperature, {field} FROM telemetry WHERE device_id = '{device}' ORDER BY 1"
    assert lake.wait_rows(sql, 2) == [[20.0, None], [21.0, 6.5]]
    _committed(lake, sql, 2)
    assert lake.rows(sql) == [[20.0, None], [21.0, 6.5]]


def test_type_conflicts_and_malformed_json_go_to_dead_letter(lake: Sensorlake, device: str
                                                             ) -> None:
    topic = f"farm/{device}/telemetry"
    lake.ingest(topic, {"temperature": 20})
    lake.ingest(topic, {"temperature": "400"})  # a numeric string is a number
    lake.ingest(topic, {"temperature": "very hot"})
    lake.mqtt_publish(topic, [b"{not json", b'{"temperature": 22}'])
    sql = f"SELECT temperature FROM telemetry WHERE device_id = '{device}' ORDER BY 1"
    _committed(lake, sql, 3)
    assert lake.rows(sql) == [[20.0], [22.0], [400.0]]
    dead_sql = (f"SELECT reason, raw FROM dead_letter WHERE topic = '{topic}' ORDER BY reason")
    deadline = time.monotonic() + 10
    while len(lake.rows(dead_sql)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    dead = lake.rows(dead_sql)
    assert len(dead) == 2
    assert dead[0][0] == 'field \'temperature\': cannot read "very hot" as double'
    assert orjson.loads(dead[0][1]) == {"temperature": "very hot"}
    assert dead[1][0].startswith("invalid JSON")
    assert dead[1][1] == "{not json"


def test_nested_structs_and_arrays_are_queryable(lake: Sensorlake, device: str) -> None:
    observation = {
        "weather_station": device,
        "air_temperature": {"value": 12.3, "quality": "1"},
        "sky_cover_condition": [{"coverage": 4, "base_height": 1200}],
        "weather_condition": ["RA", "BR"],
    }
    lake.ingest(f"weather/{device}/obs", observation)
    sql = (f"SELECT air_temperature.value, air_temperature.quality, "
           f"sky_cover_condition[1].coverage, weather_condition FROM telemetry "
           f"WHERE device_id = '{device}'")
    assert lake.wait_rows(sql, 1) == [[12.3, "1", 4.0, ["RA", "BR"]]]
    _committed(lake, sql, 1)
    assert lake.rows(sql) == [[12.3, "1", 4.0, ["RA", "BR"]]]
    # A new sub-field arrives later: the struct gains it, old rows read it as null.
    observation["air_temperature"] = {"value": 13.0, "quality": "1", "unit": "C"}
    lake.ingest(f"weather/{device}/obs", observation)
    sql2 = (f"SELECT air_temperature.value, air_temperature.unit FROM telemetry "
            f"WHERE device_id = '{device}' ORDER BY 1")
    _committed(lake, sql2, 2)
    assert lake.rows(sql2) == [[12.3, None], [13.0, "C"]]


def test_rows_are_partitioned_by_day_and_sorted(lake: Sensorlake, device: str) -> None:
    readings = [{"device_id": f"{device}-{d}", "ts": f"2026-03-0{d}T12:00:00Z", "v": d}
                for d in (3, 1, 2)]
    lake.ingest(f"farm/{device}/t", readings)
    sql = f"SELECT v FROM telemetry WHERE device_id LIKE '{device}-%'"
    _committed(lake, sql, 3)
    files = lake.rows(
        f"SELECT DISTINCT filename FROM read_parquet("
        f"'{lake.data_dir}/warehouse/sensorlake/telemetry/data/*/*.parquet', filename = true) "
        f"WHERE device_id LIKE '{device}-%'")
    days = sorted(f[0].split("/")[-2] for f in files)
    assert days == ["ts_day=2026-03-01", "ts_day=2026-03-02", "ts_day=2026-03-03"]
