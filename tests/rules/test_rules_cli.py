"""`sensorlake rules check` and `rules test`, as a user runs them before starting."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import SENSORLAKE

GOOD = '''
[[rules]]
name = "cold_stations"
sql = """SELECT weather_station, air_temperature.value AS t, topic(2) AS kind
         FROM 'sensor/+' WHERE air_temperature.value < -5"""
table = "cold_weather"
'''


def run(tmp_path: Path, config: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "sensorlake.toml"
    path.write_text(config)
    return subprocess.run([*SENSORLAKE, "rules", *args, "--config", str(path), "--data-dir",
                           str(tmp_path / "data")], capture_output=True, text=True, timeout=60,
                          check=False)


def test_check_lists_the_rules_and_their_actions(tmp_path: Path) -> None:
    done = run(tmp_path, GOOD, "check", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == [["cold_stations", "yes", "sensor/+", "table"]]


def test_check_names_the_rule_and_the_place_of_a_mistake(tmp_path: Path) -> None:
    bad = GOOD.replace("topic(2) AS kind", "topik(2) AS kind")
    done = run(tmp_path, bad, "check")
    assert done.returncode != 0
    message = " ".join(done.stderr.split())
    assert "rules.cold_stations.sql" in message
    assert "unknown function topik()" in message
    assert "did you mean topic()?" in message
    assert "line 1, column 53" in message  # where topik( stands


def test_test_prints_what_the_rule_emits_for_a_payload(tmp_path: Path) -> None:
    payload = json.dumps({"weather_station": "jungfraujoch", "air_temperature": {"value": -7}})
    done = run(tmp_path, GOOD, "test", "cold_stations", "--topic", "sensor/weather",
               "--payload", payload, "--format", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["columns"][:3] == ["weather_station", "t", "kind"]
    assert [r[:3] for r in doc["rows"]] == [["jungfraujoch", -7.0, "weather"]]
    warm = run(tmp_path, GOOD, "test", "cold_stations", "--topic", "sensor/weather",
               "--payload", '{"air_temperature": {"value": 3}}', "--format", "json")
    assert json.loads(warm.stdout)["rows"] == []
    unknown = run(tmp_path, GOOD, "test", "warm", "--topic", "a", "--payload", "{}")
    assert unknown.returncode != 0
    assert "rules in this config: cold_stations" in " ".join(unknown.stderr.split())
