"""The query API is read-only and confined to the lake."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from sensorlake.errors import QueryError
from sensorlake.query.engine import check_read_only
from tests.conftest import Sensorlake

W = "{w}"
"""Stands for the warehouse folder (with a trailing slash): an allowed directory, so writes into
it are what the guard alone has to stop."""

# Every DuckDB statement that writes or changes state, by what it is.
WRITES = {
    "copy_csv": f"COPY (SELECT 42 AS x) TO '{W}pwned.csv'",
    "copy_parquet": f"COPY (SELECT 42 AS x) TO '{W}pwned.parquet' (FORMAT parquet)",
    "create_table_as": "CREATE TABLE pwned AS SELECT 1 AS x",
    "create_view": "CREATE VIEW pwned AS SELECT 1 AS x",
    "create_macro": "CREATE MACRO pwned(a) AS a + 1",
    "create_secret": "CREATE SECRET pwned (TYPE s3, KEY_ID 'k', SECRET 'v')",
    "create_type": "CREATE TYPE pwned AS ENUM ('a', 'b')",
    "create_sequence": "CREATE SEQUENCE pwned",
    "insert": "INSERT INTO telemetry (device_id) VALUES ('pwned')",
    "update": "UPDATE telemetry SET device_id = 'pwned'",
    "delete": "DELETE FROM telemetry",
    "attach": f"ATTACH '{W}pwned.db' AS pwned",
    "detach": "DETACH memory",
    "export_database": f"EXPORT DATABASE '{W}pwned-export'",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "set": "SET enable_external_access = true",
    "reset": "RESET allowed_directories",
    "pragma": "PRAGMA enable_profiling",
    "call": "CALL checkpoint()",
    "checkpoint": "CHECKPOINT",
    "vacuum": "VACUUM",
    "alter": "ALTER VIEW telemetry RENAME TO pwned",
    "drop": "DROP VIEW telemetry",
    "use": "USE memory",
}
UNEXPLAINABLE = {"attach", "detach", "export_database", "use"}
"""DuckDB's grammar has no EXPLAIN of these: its parser refuses them as a syntax error."""

# EXPLAIN ANALYZE however it is spelled: case, line breaks, comments, the option list.
ANALYZE = [
    "EXPLAIN ANALYZE ",
    "explain\nanalyse ",
    "EXPLAIN /* x */ ANALYZE ",
    "EXPLAIN -- x\n AnAlYzE ",
    "EXPLAIN (ANALYZE) ",
    "EXPLAIN (FORMAT json, ANALYZE true) ",
    "-- lead\nEXPLAIN(analyse)",
]


def _sql(template: str, warehouse: Path) -> str:
    return template.replace(W, f"{warehouse}/")


def _refusal(name: str, prefix: str) -> str:
    """The part of the message each refusal must carry."""
    if "EXPLAIN" not in prefix.upper():
        return "statements are not allowed: queries are read-only"
    if name in UNEXPLAINABLE:
        return "SQL syntax error"
    if "ANALY" in prefix.upper():
        return "EXPLAIN ANALYZE is not allowed: it runs the statement it explains"
    return "statements is not allowed: queries are read-only"  # "EXPLAIN of COPY statements…"


@pytest.mark.parametrize("prefix", ["", "EXPLAIN ", *ANALYZE])
@pytest.mark.parametrize("name", sorted(WRITES))
def test_the_guard_refuses_every_writing_statement_however_wrapped(
        tmp_path: Path, name: str, prefix: str) -> None:
    with pytest.raises(QueryError) as caught:
        check_read_only(prefix + _sql(WRITES[name], tmp_path))
    assert _refusal(name, prefix) in str(caught.value)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("SELECT * FROM query('SELECT 1')", "query() is not allowed"),
        (f"SELECT * FROM query('COPY (SELECT 1) TO ''{W}pwned.csv''')", "query() is not allowed"),
        ("SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
         "json_execute_serialized_sql() is not allowed"),
        ("SELECT * FROM checkpoint()", "checkpoint() is not allowed"),
        ("WITH a AS (SELECT * FROM force_checkpoint()) SELECT * FROM a",
         "force_checkpoint() is not allowed"),
        ("SELECT system.main.CHECKPOINT()", "checkpoint() is not allowed"),
        ("SELECT * FROM truncate_duckdb_logs()", "truncate_duckdb_logs() is not allowed"),
        (f"SELECT * FROM enable_profiling(save_location = '{W}pwned.json')",
         "enable_profiling() is not allowed"),
        (f"SELECT * FROM enable_logging(storage = 'file', storage_path = '{W}pwned')",
         "enable_logging() is not allowed"),
        ("SELECT write_log('x')", "write_log() is not allowed"),
        ("SELECT 1 WHERE 1 IN (SELECT 1 FROM add_grammar_extension('x'))",
         "add_grammar_extension() is not allowed"),
        ("EXPLAIN SELECT * FROM query('SELECT 1')", "query() is not allowed"),
        ("EXPLAIN EXPLAIN SELECT 1", "syntax error"),
        ("EXPLAIN (FORMAT json) (ANALYZE) SELECT 1", "syntax error"),
    ],
)
def test_functions_that_hide_sql_or_change_state_are_refused(
        tmp_path: Path, sql: str, fragment: str) -> None:
    with pytest.raises(QueryError, match=re.escape(fragment)):
        check_read_only(_sql(sql, tmp_path))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "select * from range(3)",
        "FROM range(3)",
        "WITH a AS (SELECT 1 AS x) SELECT * FROM a",
        "EXPLAIN SELECT 1",
        "explain\nselect * from range(3)",
        "EXPLAIN /* analyze */ SELECT 1",
        "EXPLAIN (FORMAT json) SELECT 1",
        "EXPLAIN (SELECT 1)",
        "-- a comment\nEXPLAIN SELECT 1",
        "DESCRIBE SELECT 1",
        "SUMMARIZE SELECT 1",
        "SHOW TABLES",
        "SELECT * FROM query_table('telemetry')",
        "SELECT 'EXPLAIN ANALYZE COPY' AS not_a_statement",
    ],
)
def test_reads_pass_the_guard(sql: str) -> None:
    check_read_only(sql)


@pytest.mark.parametrize("prefix", ["EXPLAIN ANALYZE ", "EXPLAIN /* x */ ANALYZE ", "EXPLAIN "])
@pytest.mark.parametrize("name", sorted(WRITES))
def test_explained_writes_are_refused_over_http_and_write_nothing(
        lake: Sensorlake, name: str, prefix: str) -> None:
    warehouse = lake.data_dir / "warehouse"
    reply = httpx.post(f"{lake.url}/api/v1/query",
                       json={"sql": prefix + _sql(WRITES[name], warehouse)})
    assert reply.status_code == 400, reply.text
    assert _refusal(name, prefix) in reply.json()["error"]
    assert not list(warehouse.rglob("pwned*"))
    # Nothing changed for the next query either: the views are there and unchanged.
    assert lake.query("SELECT count(*) FROM telemetry WHERE device_id = 'pwned'")["rows"] == [[0]]


def test_table_functions_cannot_write_or_run_hidden_sql_over_http(lake: Sensorlake) -> None:
    warehouse = lake.data_dir / "warehouse"
    for sql in (f"SELECT * FROM query('COPY (SELECT 1) TO ''{warehouse}/pwned.csv''')",
                "SELECT * FROM query('SELECT 1')",
                "SELECT * FROM checkpoint()"):
        reply = httpx.post(f"{lake.url}/api/v1/query", json={"sql": sql})
        assert reply.status_code == 400, reply.text
        assert "is not allowed" in reply.json()["error"]
    assert not list(warehouse.rglob("pwned*"))
    # query_table only names tables, so it reads and nothing else.
    assert lake.query("SELECT count(*) >= 0 FROM query_table('telemetry')")["rows"] == [[True]]


def test_plain_explain_of_a_select_still_works(lake: Sensorlake) -> None:
    plan = lake.query("EXPLAIN SELECT device_id FROM telemetry")
    assert plan["columns"] == ["explain_key", "explain_value"]
    assert plan["rows"]
    as_json = lake.query("explain (format json)\nSELECT count(*) FROM telemetry")
    (plan_json,) = json.loads(as_json["rows"][0][1])
    assert plan_json["name"] == "UNGROUPED_AGGREGATE"  # the plan of the count, as JSON


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
    fresh.extra_env["SENSORLAKE_QUERY__TAIL_BYTES"] = "4096"
    fresh.start()
    assert fresh.proc is not None
    children = Path(f"/proc/{fresh.proc.pid}/task/{fresh.proc.pid}/children").read_text().split()
    worker = next(int(p) for p in children
                  if b"worker" in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0"))
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
