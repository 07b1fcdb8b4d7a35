"""A worker that is alive but useless is restarted by `up`; an idle one is left alone."""

from __future__ import annotations

import os
import re
import signal
import time

import httpx
import pytest

from tests.conftest import Sensorlake
from tests.pipeline.test_crash_safety import _worker_pid

pytestmark = pytest.mark.slow


def _restarts(lake: Sensorlake, reason: str) -> float:
    text = httpx.get(f"{lake.url}/metrics").text
    found = re.search(rf'sensorlake_worker_restarts_total{{reason="{reason}"}} (\S+)', text)
    assert found is not None, text
    return float(found.group(1))


def test_a_worker_that_stops_answering_is_restarted_and_nothing_is_lost(
        fresh: Sensorlake) -> None:
    fresh.flush_interval = 0.5
    fresh.extra_env["SENSORLAKE_LAKE__STALL_TIMEOUT"] = "6"  # unanswered for 2 s: restarted
    fresh.start()
    frozen = _worker_pid(fresh)
    assert frozen is not None
    os.kill(frozen, signal.SIGSTOP)  # alive, holding its consumers, doing nothing
    for n in range(20):
        assert fresh.ingest("farm/live-1/t", {"n": n}).status_code == 200
    deadline = time.monotonic() + 15
    while _worker_pid(fresh) in (None, frozen):
        assert time.monotonic() < deadline, f"the frozen worker was not replaced:\n{fresh.log()}"
        time.sleep(0.2)
    assert _restarts(fresh, "unresponsive") == 1
    sql = "SELECT count(*), count(DISTINCT n) FROM telemetry WHERE n IS NOT NULL"
    deadline = time.monotonic() + 20
    while (result := fresh.query(sql))["uncommitted_rows"] or result["rows"] != [[20, 20]]:
        assert time.monotonic() < deadline, result
        time.sleep(0.2)


def test_an_idle_worker_is_not_taken_for_a_stalled_one(fresh: Sensorlake) -> None:
    fresh.flush_interval = 0.5
    fresh.extra_env["SENSORLAKE_LAKE__STALL_TIMEOUT"] = "3"
    fresh.start()
    assert fresh.ingest("farm/live-2/t", {"n": 1}).status_code == 200
    time.sleep(10)  # committed, then nothing to do for more than three stall timeouts
    assert httpx.get(f"{fresh.url}/healthz").json()["restarts"]["worker"] == 0
    assert _restarts(fresh, "stalled") == 0
    assert _restarts(fresh, "unresponsive") == 0
