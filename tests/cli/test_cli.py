"""The `sensorlake` command as a user runs it."""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import orjson

from tests.conftest import SENSORLAKE, Sensorlake


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SENSORLAKE, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60, check=False)


def test_init_writes_a_config_that_up_accepts(tmp_path: Path) -> None:
    assert run("init", cwd=tmp_path).returncode == 0
    assert "[server]" in (tmp_path / "sensorlake.toml").read_text()
    again = run("init", cwd=tmp_path)
    assert again.returncode == 1
    assert "--force" in again.stderr


def test_config_errors_exit_1_with_the_key(tmp_path: Path) -> None:
    (tmp_path / "sensorlake.toml").write_text("[lake]\nflush_intervall = 5\n")
    result = run("tables", cwd=tmp_path)
    assert result.returncode == 1
    assert "lake.flush_intervall" in result.stderr
    assert "flush_interval" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_refuses_a_busy_port_with_a_clear_message(lake: Sensorlake, tmp_path: Path) -> None:
    result = run("up", "--data-dir", str(tmp_path / "d"), "--http-port", str(lake.http_port),
                 "--mqtt-port", "1")
    assert result.returncode == 1
    assert "--http-port" in result.stderr


def test_query_formats(lake: Sensorlake, device: str) -> None:
    lake.ingest(f"farm/{device}/t", [{"temperature": 1.5}, {"temperature": 2.5}])
    lake.wait_rows(f"SELECT 1 FROM telemetry WHERE device_id = '{device}'", 2)
    sql = f"SELECT device_id, temperature FROM telemetry WHERE device_id = '{device}' ORDER BY 2"
    as_json = orjson.loads(lake.cli("query", sql, "--format", "json").stdout)
    assert as_json["columns"] == ["device_id", "temperature"]
    assert as_json["rows"] == [[device, 1.5], [device, 2.5]]
    as_csv = list(csv.reader(io.StringIO(lake.cli("query", sql, "-f", "csv").stdout)))
    assert as_csv == [["device_id", "temperature"], [device, "1.5"], [device, "2.5"]]
    table = lake.cli("query", sql).stdout
    assert device in table
    assert "2.5" in table


def test_tables_and_describe(lake: Sensorlake) -> None:
    out = lake.cli("tables", "-f", "json").stdout
    names = [row[0] for row in orjson.loads(out)["rows"]]
    assert names == ["dead_letter", "telemetry", "telemetry_1h", "telemetry_1m", "device_state"]
    info = orjson.loads(lake.cli("describe", "telemetry", "-f", "json").stdout)
    assert info["table"] == "telemetry"
    assert info["columns"][0]["name"] == "topic"
    state = orjson.loads(lake.cli("describe", "device_state", "-f", "json").stdout)
    assert [c["name"] for c in state["columns"]][:3] == ["device_id", "online", "topic"]
    assert state["location"].endswith("device_state.db")
    missing = lake.cli("describe", "nosuch", check=False)
    assert missing.returncode == 1
    assert "sensorlake tables" in missing.stderr


def test_read_only_guard_in_the_cli(lake: Sensorlake) -> None:
    result = lake.cli("query", "SELECT * FROM read_csv('/etc/passwd')", check=False)
    assert result.returncode == 1
    assert "outside the warehouse" in result.stderr


def test_maintain_says_what_it_would_do_and_names_a_missing_table(tmp_path: Path) -> None:
    from sensorlake.config import Config
    from sensorlake.lake.catalog import open_catalog
    from tests.lake.test_maintenance import commit, outputs

    data = tmp_path / "data"
    data.mkdir()
    telemetry, _ = outputs(open_catalog(Config(data_dir=data)))
    for k in range(25):  # more than compact_min_files (20) small files today
        commit(telemetry, 1 + k * 4, 4)
    dry = run("maintain", "telemetry", "--dry-run", "--format", "json", "--data-dir", str(data))
    assert dry.returncode == 0, dry.stderr
    (report,) = orjson.loads(dry.stdout)["tables"]
    assert (report["dry_run"], report["compacted_files"], report["files_after"]) == (True, 25, 25)

    done = run("maintain", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    assert "telemetry: compact 25 files into 1" in done.stdout
    described = orjson.loads(run("describe", "telemetry", "--format", "json", "--data-dir",
                                 str(data)).stdout)
    assert described["files"] == 1
    assert "compact 25 files into 1" in described["last_maintenance"]

    missing = run("maintain", "telemetri", "--data-dir", str(data))
    assert missing.returncode == 1
    assert "no table named 'telemetri'" in missing.stderr
