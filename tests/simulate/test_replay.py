"""Replaying recorded readings at a speed-up, with original or shifted times."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from sensorlake.errors import SimulateError
from sensorlake.simulate.replay import load_events
from tests.conftest import Sensorlake

START = dt.datetime(2020, 6, 1, 12, 0, tzinfo=dt.UTC)


def _csv(path: Path, stations: int = 3, events: int = 5, step_s: int = 10) -> Path:
    lines = ["time,station,air_temperature,note"]
    for k in range(events):
        for s in range(stations):
            at = (START + dt.timedelta(seconds=k * step_s)).isoformat().replace("+00:00", "Z")
            lines.append(f"{at},st-{s},{15 + k + s / 10},ok")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_events_detects_columns_and_reads_numbers(tmp_path: Path) -> None:
    events = load_events(_csv(tmp_path / "obs.csv"))
    assert len(events) == 15
    assert events[0].device == "st-0"
    assert events[0].reading["air_temperature"] == 15.0
    assert events[-1].at_us - events[0].at_us == 40_000_000
    (tmp_path / "bad.jsonl").write_text('{"time": "2020-01-01T00:00:00Z", "x": 1}\n')
    with pytest.raises(SimulateError, match="no device column"):
        load_events(tmp_path / "bad.jsonl")
    (tmp_path / "bad2.jsonl").write_text('{"time": "yesterday", "device": "a"}\n')
    with pytest.raises(SimulateError, match="row 1"):
        load_events(tmp_path / "bad2.jsonl")


@pytest.mark.slow
def test_replay_keeps_the_gaps_shortened_by_the_speed_up(fresh: Sensorlake, tmp_path: Path
                                                         ) -> None:
    # A lake of its own: the shared one may hold columns of these names with other types.
    lake = fresh.start()
    path = _csv(tmp_path / "obs.csv")  # 40 s of events
    started = time.monotonic()
    done = lake.cli("simulate", "--replay", str(path), "--speed", "20", "--via", "http",
                    "--http-url", lake.url, "--topic", "replayed/{device}/obs")
    elapsed = time.monotonic() - started
    assert "sent 15 readings, acked 15, failed 0" in done.stdout
    assert 2.0 <= elapsed < 10, elapsed  # 40 s / 20 = 2 s, plus the CLI's start-up
    rows = lake.wait_rows("SELECT device_id, min(ts), max(ts), count(*) FROM telemetry "
                          "WHERE topic LIKE 'replayed/%' GROUP BY 1 ORDER BY 1", 3)
    assert [r[0] for r in rows] == ["st-0", "st-1", "st-2"]
    assert rows[0][1].startswith("2020-06-01T12:00:00")  # original event times kept
    assert rows[0][2].startswith("2020-06-01T12:00:40")
    assert all(r[3] == 5 for r in rows)

    done = lake.cli("simulate", "--replay", str(path), "--speed", "1000", "--via", "http",
                    "--http-url", lake.url, "--topic", "shifted/{device}/obs",
                    "--shift-to-now")
    assert "acked 15" in done.stdout
    first = lake.wait_rows("SELECT min(ts) FROM telemetry WHERE topic LIKE 'shifted/%'", 1)
    when = dt.datetime.fromisoformat(first[0][0].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 60
