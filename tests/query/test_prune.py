"""File pruning by the time bounds of a query: only where it cannot change the answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sensorlake.config import Config
from sensorlake.lake.catalog import open_catalog
from sensorlake.query.engine import QueryEngine
from sensorlake.query.prune import SLACK_US, time_bounds
from tests.lake.test_maintenance import commit, outputs
from tests.pipeline.test_commit import decode

DAY_US = 86_400_000_000


def us(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1_000_000)


MAY_1 = "2026-05-01T00:00:00+00:00"


@pytest.mark.parametrize(("sql", "lower", "upper"), [
    ("SELECT * FROM telemetry WHERE ts >= '2026-05-01T00:00:00Z'", MAY_1, None),
    ("SELECT * FROM telemetry WHERE '2026-05-01T00:00:00Z' > ts", None, MAY_1),
    ("SELECT * FROM telemetry t WHERE t.ts BETWEEN '2026-05-01T00:00:00Z' AND "
     "'2026-05-02T00:00:00Z' AND device_id = 'a'", "2026-05-01T00:00:00+00:00",
     "2026-05-02T00:00:00+00:00"),
    ("SELECT count(*) FROM telemetry WHERE ts = '2026-05-01T12:00:00Z'",
     "2026-05-01T12:00:00+00:00", "2026-05-01T12:00:00+00:00"),
])
def test_bounds_are_read_from_the_where_clause(sql: str, lower: str | None,
                                                upper: str | None) -> None:
    bounds = time_bounds(sql)
    assert bounds is not None
    assert bounds.table == "telemetry"
    assert bounds.lower_us == (us(lower) - SLACK_US if lower else None)
    assert bounds.upper_us == (us(upper) + SLACK_US if upper else None)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM telemetry WHERE ts > '2026-05-01' OR device_id = 'a'",   # under OR
    "SELECT * FROM telemetry WHERE NOT ts > '2026-05-01'",                  # under NOT
    "SELECT * FROM telemetry a JOIN dead_letter b ON a.seq = b.seq WHERE ts > '2026-05-01'",
    "SELECT * FROM (SELECT * FROM telemetry) WHERE ts > '2026-05-01'",     # not a base table
    "WITH telemetry AS (SELECT 1 AS ts) SELECT * FROM telemetry WHERE ts > 0",
    "SELECT * FROM telemetry WHERE ts > received_at",                       # reads a column
    "SELECT * FROM telemetry WHERE ts > (SELECT max(ts) FROM dead_letter)",  # a subquery
    "SELECT * FROM telemetry WHERE other.ts > '2026-05-01'",                 # another table's ts
    "SELECT * FROM telemetry",
])
def test_no_bounds_where_leaving_files_out_could_change_the_answer(sql: str) -> None:
    assert time_bounds(sql) is None


def test_a_time_bounded_query_reads_only_the_days_it_needs_and_answers_the_same(
        tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data")
    config.data_dir.mkdir()
    telemetry, _ = outputs(open_catalog(config))
    now = datetime.now(UTC)
    for day in range(30):  # a month of days, one file each
        commit(telemetry, 1 + day * 10, 10, ts=now - timedelta(days=day))
    engine = QueryEngine(config)
    table = engine.load("telemetry")
    since = (now - timedelta(days=2, hours=1)).isoformat()
    sql = f"SELECT count(*), sum(n) FROM telemetry WHERE ts > '{since}'"

    pruned = engine._data_files("telemetry", table, time_bounds(sql))
    assert len(pruned) == 3  # today, yesterday and the day before
    assert engine.execute(sql).rows == [(30, sum(range(1, 31)))]
    unbounded = f"SELECT count(*), sum(n) FROM telemetry WHERE ts > '{since}' OR false"
    assert engine.execute(unbounded).rows == [(30, sum(range(1, 31)))]
    assert len(engine._data_files("telemetry", table)) == 30


def test_a_new_snapshot_reads_only_the_manifests_it_adds(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data")
    config.data_dir.mkdir()
    telemetry, _ = outputs(open_catalog(config))
    for k in range(20):
        commit(telemetry, 1 + k * 10, 10)
    engine = QueryEngine(config)
    assert engine.execute("SELECT count(*) FROM telemetry").rows == [(200,)]
    cached = dict(engine._manifests)
    commit(telemetry, 201, 10)
    assert engine.execute("SELECT count(*) FROM telemetry").rows == [(210,)]
    added = set(engine._manifests) - set(cached)
    assert len(added) == 1
    assert all(engine._manifests[path] is entries for path, entries in cached.items())


def test_a_column_only_old_files_hold_still_binds_when_they_are_left_out(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data")
    config.data_dir.mkdir()
    telemetry, _ = outputs(open_catalog(config))
    old = datetime.now(UTC) - timedelta(days=10)
    batch = decode({"device_id": "a", "ts": old.isoformat(), "co2": 410})
    telemetry.add(batch)
    telemetry.write(telemetry.seal(), batch.through)
    commit(telemetry, 2, 5)  # today, without co2
    result = QueryEngine(config).execute(
        "SELECT count(*), max(co2) FROM telemetry WHERE ts > now() - INTERVAL 1 DAY")
    assert result.rows == [(5, None)]
