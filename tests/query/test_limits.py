"""Each query is bounded in time, memory and threads, and a runaway one leaves ingest alone."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from sensorlake.config import load_config
from sensorlake.errors import ConfigError, QueryError
from sensorlake.query.engine import QueryEngine
from tests.conftest import Sensorlake

RUNAWAY = "SELECT count(*) FROM range(1000000000) a, range(100000) b"
"""10^14 pairs and next to no memory (only the small side is held): it runs until stopped.
(With two sides of 10^9 DuckDB would hold one side and stop at query.memory_limit instead.)"""
HUNGRY = "SELECT length(string_agg(repeat('x', 100), ',')) FROM range(10000000)"
"""A ~1 GB string, which string_agg must hold whole."""


def _engine(tmp_path: Path, **query: Any) -> QueryEngine:
    return QueryEngine(load_config(None, {"data_dir": str(tmp_path / "data"), "query": query},
                                   environ={}))


def test_the_limits_default_to_what_a_small_board_can_spare_and_every_core(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    limits = load_config(environ={}).query
    cores = len(os.sched_getaffinity(0))
    assert (limits.timeout, limits.memory_limit, limits.threads) == (30.0, "512MB", cores)
    pinned = load_config(environ={"SENSORLAKE_QUERY__THREADS": "1"}).query
    assert pinned.threads == 1


@pytest.mark.parametrize("value", ["512XB", "lots", "512", "1KB", "-1GB"])
def test_a_bad_memory_limit_names_the_key(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={"SENSORLAKE_QUERY__MEMORY_LIMIT": value})
    assert caught.value.key == "query.memory_limit"
    assert value in str(caught.value)


@pytest.mark.parametrize(("key", "value"), [("timeout", "0"), ("timeout", "-1"),
                                            ("threads", "0")])
def test_bad_time_and_thread_limits_name_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={f"SENSORLAKE_QUERY__{key.upper()}": value})
    assert caught.value.key == f"query.{key}"


def test_each_query_runs_under_the_configured_limits(tmp_path: Path) -> None:
    engine = _engine(tmp_path, memory_limit="100MiB", threads=2)
    rows = engine.execute("SELECT current_setting('memory_limit'), current_setting('threads'), "
                          "current_setting('temp_directory')").rows
    assert rows == [("100.0 MiB", 2, "")]  # and nothing spills to disk


def test_a_query_past_its_time_limit_is_stopped(tmp_path: Path) -> None:
    engine = _engine(tmp_path, timeout=1)
    started = time.monotonic()
    with pytest.raises(QueryError) as caught:
        engine.execute(RUNAWAY)
    assert 1.0 <= time.monotonic() - started < 3.0
    assert "ran longer than query.timeout (1 s)" in str(caught.value)
    assert "raise query.timeout" in (caught.value.hint or "")
    assert caught.value.status == 400
    assert engine.execute("SELECT 42").rows == [(42,)]  # the engine is fine afterwards


def test_a_query_past_its_memory_limit_says_which_limit(tmp_path: Path) -> None:
    engine = _engine(tmp_path, memory_limit="64MB")
    with pytest.raises(QueryError) as caught:
        engine.execute(HUNGRY)
    assert "needed more memory than query.memory_limit (64MB)" in str(caught.value)
    assert "Out of Memory Error" in str(caught.value)
    assert "SET memory_limit" not in str(caught.value)  # DuckDB's advice is refused here
    assert "raise query.memory_limit" in (caught.value.hint or "")


def test_the_cli_query_gets_the_limits_too(fresh: Sensorlake) -> None:
    fresh.extra_env["SENSORLAKE_QUERY__TIMEOUT"] = "1"
    result = fresh.cli("query", RUNAWAY, check=False)
    assert result.returncode != 0
    assert "query.timeout" in result.stderr


@pytest.mark.slow
def test_a_runaway_query_is_stopped_at_its_limit_while_ingest_carries_on(
        fresh: Sensorlake) -> None:
    fresh.extra_env["SENSORLAKE_QUERY__TIMEOUT"] = "2"
    fresh.start()
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        runaway = pool.submit(httpx.post, f"{fresh.url}/api/v1/query", json={"sql": RUNAWAY},
                              timeout=60)
        time.sleep(0.3)  # under way
        latencies = []
        for n in range(20):
            sent = time.monotonic()
            reply = fresh.ingest("farm/gh-01/telemetry", {"n": n})
            latencies.append(time.monotonic() - sent)
            assert reply.status_code == 200, reply.text
            assert reply.json()["accepted"] == 1
        assert not runaway.done(), "the ingest requests were meant to overlap the query"
        answer = runaway.result()
        elapsed = time.monotonic() - started
    assert answer.status_code == 400, answer.text
    assert "ran longer than query.timeout (2 s)" in answer.json()["error"]
    assert "SENSORLAKE_QUERY__TIMEOUT" in answer.json()["hint"]
    assert 2.0 <= elapsed < 4.0, elapsed
    assert max(latencies) < 1.0, latencies
    rows = fresh.wait_rows("SELECT n FROM telemetry WHERE device_id = 'gh-01' ORDER BY n", 20)
    assert rows == [[n] for n in range(20)]


@pytest.mark.slow
def test_a_query_past_its_memory_limit_is_answered_with_that_limit(fresh: Sensorlake) -> None:
    fresh.extra_env["SENSORLAKE_QUERY__MEMORY_LIMIT"] = "64MB"
    fresh.start()
    answer = httpx.post(f"{fresh.url}/api/v1/query", json={"sql": HUNGRY}, timeout=60)
    assert answer.status_code == 400, answer.text
    assert "needed more memory than query.memory_limit (64MB)" in answer.json()["error"]
    assert "SENSORLAKE_QUERY__MEMORY_LIMIT" in answer.json()["hint"]
    assert fresh.query("SELECT 42")["rows"] == [[42]]


def test_the_documented_time_bucket_counts_each_reading_in_its_own_hour(tmp_path: Path) -> None:
    """docs/operations.md's fast form, as written there, on the last instant of an hour."""
    import re

    text = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    found = re.search(r"`(make_timestamptz\(epoch_us\(ts\)[^`]*)` for hours", text)
    assert found, "the hourly bucket is no longer documented where this test looks"
    bucket = found.group(1)
    engine = _engine(tmp_path)
    rows = engine.execute(
        f"SELECT {bucket} FROM (VALUES (TIMESTAMPTZ '2026-05-01 12:59:59.7+00'),"
        " (TIMESTAMPTZ '2026-05-01 12:00:00+00'), (TIMESTAMPTZ '2026-05-01 11:59:59.999999+00'))"
        " AS t(ts)").rows
    assert [r[0].isoformat() for r in rows] == [
        "2026-05-01T12:00:00+00:00", "2026-05-01T12:00:00+00:00", "2026-05-01T11:00:00+00:00"]
    rounded = engine.execute("SELECT to_timestamp(epoch(TIMESTAMPTZ '2026-05-01 12:59:59.7+00')"
                             "::BIGINT // 3600 * 3600)").rows
    assert rounded[0][0].hour == 13  # what the docs warn of
