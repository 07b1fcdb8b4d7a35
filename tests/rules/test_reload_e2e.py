"""Reloading rules and views into a running `up` (SIGHUP, `sensorlake reload`) while readings
flow: nothing lost or doubled in telemetry or in a rule's table, a new rule starting at the next
reading, and a config that cannot be applied refused with the old one kept."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Sensorlake
from tests.pipeline.test_crash_safety import HttpLoad
from tests.rules.test_rules_e2e import wait_count

pytestmark = pytest.mark.slow

ODD = '''
[[rules]]
name = "odd"
sql = "SELECT n FROM 'crash/+/t' WHERE n % 2 = 1"
table = "odd_ones"
'''
EVEN = '''
[[rules]]
name = "even"
sql = "SELECT n FROM 'crash/+/t' WHERE n % 2 = 0"
table = "even_ones"

[[views]]
name = "per_source"
sql = "SELECT src, count(*) AS readings FROM telemetry GROUP BY src"
'''


def test_rules_and_views_reload_under_load_with_nothing_lost_or_doubled(
        fresh: Sensorlake, tmp_path: Path) -> None:
    config = tmp_path / "sensorlake.toml"
    config.write_text(ODD)
    fresh.extra_args = ("--config", str(config))
    fresh.flush_interval = 0.5
    fresh.start()
    load = HttpLoad(fresh, batch=20, pause=0.02)
    try:
        time.sleep(2.0)
        config.write_text(ODD + EVEN)
        done = fresh.cli("reload", "--config", str(config), "--data-dir", str(fresh.data_dir))
        assert "reloaded: 2 rules and 1 views in effect" in done.stdout
        time.sleep(2.0)
    finally:
        load.finish()
    health = httpx.get(f"{fresh.url}/healthz", timeout=10).json()
    assert health["reloaded"]["ok"] is True
    assert health["restarts"]["worker"] == 0  # replaced on purpose, not a crash

    acked = sorted(load.acked)
    total = fresh.wait_rows("SELECT count(*) FROM telemetry", 1)[0][0]
    telemetry = fresh.rows("SELECT count(*), count(DISTINCT n) FROM telemetry")
    assert telemetry == [[total, total]]  # nothing doubled
    assert total >= len(acked)
    held = {row[0] for row in fresh.rows("SELECT n FROM telemetry")}
    assert not set(acked) - held  # nothing lost
    odd = sorted(n for n in held if n % 2 == 1)
    wait_count(fresh, "odd_ones", len(odd))
    time.sleep(1.5)  # a doubled commit would land by now
    assert fresh.rows("SELECT count(*), count(DISTINCT n), sum(n) FROM odd_ones") == [
        [len(odd), len(odd), sum(odd)]]
    # the new rule: from the next reading on, each once
    first = fresh.rows("SELECT min(n) FROM even_ones")[0][0]
    assert first is not None
    even = sorted(n for n in held if n % 2 == 0 and n >= first)
    wait_count(fresh, "even_ones", len(even))
    assert fresh.rows("SELECT count(*), count(DISTINCT n), sum(n) FROM even_ones") == [
        [len(even), len(even), sum(even)]]
    assert fresh.rows("SELECT src, readings FROM per_source") == [["http", total]]


def test_a_reload_that_cannot_apply_is_refused_and_the_old_rules_run_on(
        fresh: Sensorlake, tmp_path: Path) -> None:
    config = tmp_path / "sensorlake.toml"
    config.write_text(ODD)
    fresh.extra_args = ("--config", str(config))
    fresh.start()
    args = ("--config", str(config), "--data-dir", str(fresh.data_dir))

    config.write_text(ODD + "\n[query]\nmax_rows = 5\n")
    refused = fresh.cli("reload", *args, check=False)
    assert refused.returncode == 1
    assert "not reloaded: query.max_rows changed, which takes a restart" in refused.stderr

    # `sensorlake reload` checks the file first; SIGHUP alone has `up` check it
    config.write_text(ODD.replace("n % 2 = 1", "n %% 2 = 1"))
    refused = fresh.cli("reload", *args, check=False)
    assert refused.returncode == 1
    assert "rules.odd.sql" in refused.stderr
    assert fresh.proc is not None
    os.kill(fresh.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "rules.odd.sql" not in str(httpx.get(f"{fresh.url}/healthz", timeout=10).json()
                                     .get("reloaded")):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    fresh.ingest("crash/d/t", [{"n": 1}, {"n": 2}, {"n": 3}])
    wait_count(fresh, "odd_ones", 2)
    assert httpx.get(f"{fresh.url}/healthz", timeout=10).json()["reloaded"]["ok"] is False
