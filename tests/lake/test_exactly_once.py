"""Crash and restart: nothing acked is lost, nothing is committed twice."""

from __future__ import annotations

import os
import signal
import time

import httpx
import orjson
import pytest

from tests.conftest import Sensorlake

pytestmark = pytest.mark.slow


def _ids_sql() -> str:
    return "SELECT n FROM telemetry ORDER BY n"


def _send(lake: Sensorlake, start: int, count: int) -> None:
    half = count // 2
    body = b"\n".join(orjson.dumps({"n": n}) for n in range(start, start + half))
    assert lake.ingest("farm/gh-01/telemetry", body, "application/x-ndjson").json()[
        "accepted"] == half
    lake.mqtt_publish("farm/gh-02/telemetry",
                      [orjson.dumps({"n": n}) for n in range(start + half, start + count)])


def _wait_committed(lake: Sensorlake, count: int, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = lake.query(_ids_sql())
        if result["uncommitted_rows"] == 0 and len(result["rows"]) >= count:
            break
        time.sleep(0.2)
    return [int(r[0]) for r in lake.rows(_ids_sql())]


def test_sigterm_commits_what_is_buffered_and_restart_resumes(fresh: Sensorlake) -> None:
    fresh.flush_interval = 3600  # nothing is committed unless shutdown flushes it
    fresh.start()
    _send(fresh, 0, 100)
    started = time.monotonic()
    assert fresh.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    result = orjson.loads(fresh.cli("query", _ids_sql(), "-f", "json").stdout)
    assert [r[0] for r in result["rows"]] == list(range(100))
    assert result["uncommitted_rows"] == 0
    fresh.flush_interval = 0.5
    fresh.start()
    _send(fresh, 100, 100)
    assert _wait_committed(fresh, 200) == list(range(200))


def test_sigint_like_ctrl_c_stops_cleanly(fresh: Sensorlake) -> None:
    fresh.start()
    _send(fresh, 0, 10)
    assert fresh.stop(signal.SIGINT) == 0
    result = orjson.loads(fresh.cli("query", _ids_sql(), "-f", "json").stdout)
    assert len(result["rows"]) == 10


def test_a_dead_nats_server_is_restarted_and_the_pipeline_carries_on(fresh: Sensorlake) -> None:
    fresh.start()
    _send(fresh, 0, 20)
    pid = int((fresh.data_dir / "nats.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    accepted = False
    while time.monotonic() < deadline and not accepted:
        try:
            # Retried with one Idempotency-Key: an attempt whose answer was lost in the
            # restart must not be stored a second time by the next attempt.
            reply = httpx.post(
                f"{fresh.url}/api/v1/ingest", params={"topic": "farm/gh-01/telemetry"},
                content=b'{"n": 20}', timeout=30,
                headers={"Content-Type": "application/json", "Idempotency-Key": "retry-n20"},
            )
            accepted = reply.status_code == 200
        except httpx.HTTPError:
            pass
        if not accepted:
            time.sleep(0.2)
    assert accepted, fresh.log()
    # The supervisor counts the restart once the new server's ports answer, which can be a
    # moment after the client has already reconnected through them.
    deadline = time.monotonic() + 5
    while httpx.get(f"{fresh.url}/healthz").json()["restarts"]["nats-server"] < 1:
        assert time.monotonic() < deadline, "the nats-server restart was never counted"
        time.sleep(0.1)
    assert _wait_committed(fresh, 21) == list(range(21))
