"""The query API is read-only and confined to the lake."""

from __future__ import annotations

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
