"""DuckDB's own parser and a scratch engine, shared by the read-only check and file pruning.

One locked-down connection per process serves every request: opening one costs ~20 ms,
serialising a statement or evaluating a constant well under one. It has no tables and no file
access, so whatever it is asked to evaluate can read nothing.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import duckdb

from sensorlake.sandbox import sealed_duckdb

_lock = threading.Lock()
_connection: tuple[int, duckdb.DuckDBPyConnection] | None = None


def _scratch() -> duckdb.DuckDBPyConnection:
    global _connection
    if _connection is None or _connection[0] != os.getpid():  # a forked child gets its own
        _connection = (os.getpid(), sealed_duckdb(threads=None))
    return _connection[1]


def syntax_tree(select: str) -> dict[str, Any]:
    """DuckDB's parse of one SELECT, as JSON (`{"error": true, …}` when it does not parse)."""
    with _lock:
        row = _scratch().execute("SELECT json_serialize_sql(?)", [select]).fetchone()
    tree: dict[str, Any] = json.loads(row[0]) if row else {"error": True}
    return tree


def nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every object in a statement tree (expressions, table references, subqueries), depth
    first: the one walk the read-only check, table lookup and pruning each filter."""
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from nodes(value)


def function_names(tree: Any) -> Iterator[str]:
    """Names of the functions a tree calls, lower case."""
    for node in nodes(tree):
        name = node.get("function_name")
        if isinstance(name, str):
            yield name.lower()


def base_tables(tree: Any) -> set[str]:
    """Every table name a statement tree reads (in FROM, joins, subqueries, CTEs), unqualified
    and as written; CTE names appear too, so it may name more than the lake has."""
    return {node["table_name"] for node in nodes(tree)
            if node.get("type") == "BASE_TABLE" and isinstance(node.get("table_name"), str)}


def scalar(sql: str) -> Any:
    """The single value of a query that reads no table; None if it fails in any way."""
    with _lock:
        try:
            row = _scratch().execute(sql).fetchone()
        except duckdb.Error:
            return None
    return row[0] if row else None


def unparse(tree: dict[str, Any]) -> str | None:
    """SQL text of a statement tree (the inverse of syntax_tree), or None."""
    with _lock:
        try:
            row = _scratch().execute("SELECT json_deserialize_sql(?)",
                                     [json.dumps(tree)]).fetchone()
        except duckdb.Error:
            return None
    return str(row[0]) if row else None
