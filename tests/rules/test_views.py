"""Saved views: a read-only query under a name, read like a table by every query — the weather
class's flattening with UNNEST, fresh readings included — and listed with the tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sensorlake.config import load_config
from sensorlake.errors import ConfigError
from tests.conftest import Sensorlake

VIEWS = '''
[[views]]
name = "flat_weather"
sql = """SELECT weather_station, air_temperature.value AS air_temperature_value, condition
         FROM telemetry CROSS JOIN UNNEST(weather_condition) AS t(condition)"""

[[views]]
name = "snowy"
sql = "SELECT DISTINCT weather_station FROM flat_weather WHERE condition = 'snow'"
'''


@pytest.mark.slow
def test_a_saved_view_with_unnest_reads_like_a_table(fresh: Sensorlake, tmp_path: Path) -> None:
    config = tmp_path / "sensorlake.toml"
    config.write_text(VIEWS)
    fresh.extra_args = ("--config", str(config))
    fresh.flush_interval = 30.0  # the readings stay uncommitted: the view sees them all the same
    fresh.start()
    for station, conditions in (("jungfraujoch", ["snow", "fog"]), ("bern", ["rain"])):
        reply = fresh.ingest("sensor/weather", {
            "weather_station": station, "air_temperature": {"value": -3.5},
            "weather_condition": conditions})
        assert reply.status_code == 200, reply.text
    rows = fresh.wait_rows("SELECT weather_station, condition, air_temperature_value "
                           "FROM flat_weather ORDER BY weather_station, condition", 3)
    assert rows == [["bern", "rain", -3.5], ["jungfraujoch", "fog", -3.5],
                    ["jungfraujoch", "snow", -3.5]]
    assert fresh.rows("SELECT * FROM snowy") == [["jungfraujoch"]]
    listed = httpx.get(f"{fresh.url}/api/v1/tables", timeout=10).json()
    assert listed["views"] == ["flat_weather", "snowy"]
    assert {"telemetry", "flat_weather", "snowy"} <= set(listed["tables"])
    listing = fresh.cli("tables", "--config", str(config), "--format", "json").stdout
    cli = json.loads(listing)["rows"]
    assert [r[0] for r in cli if r[-1] == "view"] == ["flat_weather", "snowy"]


@pytest.mark.parametrize(("views", "key", "message"), [
    ([{"name": "v", "sql": "DELETE FROM telemetry"}], "views.v.sql", "read-only"),
    ([{"name": "v", "sql": "SELECT * FROM w"}, {"name": "w", "sql": "SELECT 1"}],
     "views.v.sql", "reads w, defined after it"),
    ([{"name": "v", "sql": "SELECT * FROM v"}], "views.v.sql", "(or itself)"),
    ([{"name": "telemetry", "sql": "SELECT 1"}], "views.telemetry", "the name of a table"),
    ([{"name": "v", "sql": "SELECT 1"}, {"name": "v", "sql": "SELECT 2"}], "views.v",
     "two views"),
    ([{"name": "v", "sql": "SELECT 1", "materialized": True}], "views[0].materialized",
     "unknown setting"),
])
def test_a_bad_view_is_refused_as_the_config_loads(views: list[dict[str, Any]], key: str,
                                                    message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"views": views}, environ={})
    assert caught.value.key == key, caught.value
    assert message in str(caught.value)


def test_a_view_named_like_a_rule_table_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"rules": [{"name": "r", "sql": "SELECT a FROM '#'", "table": "cold"}],
                           "views": [{"name": "cold", "sql": "SELECT 1"}]}, environ={})
    assert caught.value.key == "views.cold"
