"""The query API is read-only and confined to the lake."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Sensorlake


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("CREATE TABLE x AS SELECT 1", "CREATE statements are not allowed"),
        ("INSERT INTO telemetry (device_id) VALUES ('x')", "INSERT statements are not allowed"),
        ("DELETE FROM telemetry", "DELETE statements are not allowed"),
        ("COPY telemetry TO '/tmp/out.csv'", "COPY statements are not allowed"),
        ("ATTACH '/tmp/other.db'", "ATTACH statements are not allowed"),
        ("INSTALL httpfs", "not allowed"),
        ("SET enable_external_access = true", "SET statements are not allowed"),
        ("SELECT * FROM read_csv('/etc/passwd')", "files outside the warehouse"),
        ("SELECT * FROM read_text('/etc/hostname')", "files outside the warehouse"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SELEC 1", "syntax error"),
    ],
)
def test_writes_and_foreign_files_are_refused(lake: Sensorlake, sql: str, fragment: str) -> None:
    reply = httpx.post(f"{lake.url}/api/v1/query", json={"sql": sql})
    assert reply.status_code == 400, reply.text
    assert fragment in reply.json()["error"] + (reply.json()["hint"] or "")


def test_query_input_is_validated(lake: Sensorlake) -> None:
    assert httpx.post(f"{lake.url}/api/v1/query", content=b"nope").status_code == 400
    assert httpx.post(f"{lake.url}/api/v1/query", json={"sql": ""}).status_code == 400
    assert httpx.post(f"{lake.url}/api/v1/query", json={"sql": "SELECT 1",
                                                        "max_rows": -1}).status_code == 400
    reply = httpx.post(f"{lake.url}/api/v1/query", json={"sql": "SELECT * FROM nosuch"})
    assert reply.status_code == 404


def test_results_are_truncated_at_max_rows(lake: Sensorlake) -> None:
    reply = httpx.post(f"{lake.url}/api/v1/query",
                       json={"sql": "SELECT * FROM range(50)", "max_rows": 10}).json()
    assert len(reply["rows"]) == 10
    assert reply["truncated"] is True


def test_tables_are_listed_and_described(lake: Sensorlake) -> None:
    assert {"telemetry", "dead_letter"} <= set(
        httpx.get(f"{lake.url}/api/v1/tables").json()["tables"])
    info = httpx.get(f"{lake.url}/api/v1/tables/telemetry").json()
    names = [c["name"] for c in info["columns"]]
    assert names[:5] == ["topic", "device_id", "ts", "received_at", "seq"]
    assert info["partitioning"] == ["1000: ts_day: day(3)"]
    assert httpx.get(f"{lake.url}/api/v1/tables/nosuch").status_code == 404


@pytest.mark.slow
def test_a_stalled_writer_caps_the_fresh_tail_and_says_so(fresh: Sensorlake) -> None:
    fresh.extra_env["SENSORLAKE_LAKE__FLUSH_BYTES"] = "4096"
    fresh.start()
    assert fresh.proc is not None
    children = Path(f"/proc/{fresh.proc.pid}/task/{fresh.proc.pid}/children").read_text().split()
    worker = next(int(p) for p in children
                  if b"worker" in Path(f"/proc/{p}/cmdline").read_bytes())
    os.kill(worker, signal.SIGSTOP)  # the writer hangs: nothing more is committed
    try:
        for n in range(10):
            assert fresh.ingest("farm/gh-01/t", {"n": n, "pad": "x" * 1000}).status_code == 200
        result = fresh.query("SELECT count(*) FROM telemetry")
        assert 0 < result["rows"][0][0] < 10
        assert "writer is behind" in result["notes"][0]
    finally:
        os.kill(worker, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while True:
        result = fresh.query("SELECT count(*) FROM telemetry")
        if result["rows"] == [[10]] and "notes" not in result:
            break  # caught up: everything visible, nothing left out
        assert time.monotonic() < deadline, result
        time.sleep(0.2)
