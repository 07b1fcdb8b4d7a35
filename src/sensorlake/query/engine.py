"""Read-only SQL over the lake with DuckDB.

Each query gets a fresh in-memory DuckDB whose views read the current snapshot's Parquet files in
place, plus — when given — the uncommitted tail as an Arrow table, so that a reading is queryable
the moment the writer has it. Then the connection is locked down: file access only inside the
warehouse, no extensions, no configuration changes; and only a single SELECT is accepted.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlparse
from uuid import UUID

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from sensorlake.config import Config
from sensorlake.errors import QueryError, TableNotFound
from sensorlake.lake.catalog import open_catalog
from sensorlake.lake.tables import load_table, stream_position

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


@dataclass
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False
    uncommitted_rows: int = 0
    elapsed_ms: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "types": self.types,
            "rows": [[jsonable(v) for v in row] for row in self.rows],
            "truncated": self.truncated,
            "uncommitted_rows": self.uncommitted_rows,
            "elapsed_ms": round(self.elapsed_ms, 3),
            **({"notes": self.notes} if self.notes else {}),
        }


def jsonable(value: Any) -> Any:
    """DuckDB's Python values as JSON: times ISO 8601, bytes as text where they are text."""
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _local_path(location: str) -> str:
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path) if parsed.scheme else location
    raise QueryError(
        f"the warehouse is at {parsed.scheme}://, which the embedded query engine cannot read",
        hint="query it with an Iceberg engine (Trino, Spark, Athena) or use a local warehouse",
    )


def check_read_only(sql: str) -> None:
    """One SELECT (or EXPLAIN) statement; anything else is refused before it runs."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL syntax error: {_clean(exc)}") from None
    if len(statements) != 1:
        raise QueryError(
            f"expected exactly one statement, got {len(statements)}",
            hint="send a single SELECT",
        )
    kind = statements[0].type
    if kind not in _ALLOWED:
        name = str(kind).rsplit(".", 1)[-1]
        raise QueryError(
            f"{name} statements are not allowed: queries are read-only",
            hint="only SELECT is accepted; the lake is written by the pipeline alone",
        )


def _clean(exc: Exception) -> str:
    return " ".join(str(exc).split())


class QueryEngine:
    def __init__(self, config: Config, catalog: Catalog | None = None) -> None:
        self._config = config
        self._catalog = catalog or open_catalog(config)
        self._namespace = config.lake.namespace
        self._files: dict[tuple[str, int | None], list[str]] = {}

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def table_names(self) -> list[str]:
        try:
            identifiers = self._catalog.list_tables(self._namespace)
        except Exception:  # no namespace yet: nothing was ever written
            return []
        return sorted(ident[-1] for ident in identifiers)

    def load(self, name: str) -> Table:
        return load_table(self._catalog, self._namespace, name)

    def execute(
        self,
        sql: str,
        *,
        tails: Mapping[str, pa.Table | None] | None = None,
        max_rows: int | None = None,
        notes: list[str] | None = None,
    ) -> QueryResult:
        check_read_only(sql)
        started = time.perf_counter()
        tails = tails or {}
        con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": "false",
                                                  "autoload_known_extensions": "false"})
        try:
            uncommitted = self._create_views(con, tails)
            warehouse = _local_path(self._config.warehouse).rstrip("/") + "/"
            con.execute("SET allowed_directories = ?", [[warehouse]])
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            try:
                cursor = con.execute(sql)
                limit = max_rows if max_rows is not None else self._config.query.max_rows
                rows = cursor.fetchmany(limit + 1)
            except duckdb.Error as exc:
                raise _explain(exc) from None
            description = cursor.description or []
            truncated = len(rows) > limit
            return QueryResult(
                columns=[d[0] for d in description],
                types=[str(d[1]) for d in description],
                rows=rows[:limit],
                truncated=truncated,
                uncommitted_rows=uncommitted,
                elapsed_ms=(time.perf_counter() - started) * 1000,
                notes=list(notes or []),
            )
        finally:
            con.close()

    def _create_views(self, con: duckdb.DuckDBPyConnection, tails: Mapping[str, pa.Table | None]
                      ) -> int:
        uncommitted = 0
        for name in self.table_names():
            table = self.load(name)
            files = self._data_files(name, table)
            parts: list[str] = []
            if files:
                listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                parts.append(f"SELECT * FROM read_parquet([{listing}], union_by_name = true)")
            else:
                empty = f"__empty_{name}"
                con.register(empty, table.schema().as_arrow().empty_table())
                parts.append(f"SELECT * FROM {quote_ident(empty)}")
            tail = tails.get(name)
            if tail is not None and tail.num_rows and "seq" in tail.column_names:
                # The tail was taken before this snapshot was loaded; a commit in between
                # would otherwise show its readings twice.
                committed, _ = stream_position(table)
                tail = tail.filter(pc.greater(tail["seq"], committed))
            if tail is not None and tail.num_rows:
                tail_name = f"__uncommitted_{name}"
                con.register(tail_name, tail)
                parts.append(f"SELECT * FROM {quote_ident(tail_name)}")
                uncommitted += tail.num_rows
            con.execute(
                f"CREATE VIEW {quote_ident(name)} AS " + " UNION ALL BY NAME ".join(parts)
            )
        return uncommitted

    def _data_files(self, name: str, table: Table) -> list[str]:
        """Data files of the current snapshot. Planning reads every manifest, and a snapshot
        never changes, so the list is kept per snapshot id (only the newest few)."""
        snapshot = table.current_snapshot()
        key = (name, snapshot.snapshot_id if snapshot else None)
        files = self._files.get(key)
        if files is None:
            files = [_local_path(task.file.file_path) for task in table.scan().plan_files()]
            self._files = {k: v for k, v in self._files.items() if k[0] != name}
            self._files[key] = files
        return files

    def describe(self, name: str) -> dict[str, Any]:
        table = self.load(name)
        snapshot = table.current_snapshot()
        summary = snapshot.summary if snapshot else None
        return {
            "table": name,
            "location": table.location(),
            "columns": [
                {"name": f.name, "type": str(f.field_type), "doc": f.doc or ""}
                for f in table.schema().fields
            ],
            "partitioning": [str(f) for f in table.spec().fields],
            "rows": int(summary.get("total-records", 0)) if summary else 0,
            "files": int(summary.get("total-data-files", 0)) if summary else 0,
            "size_bytes": int(summary.get("total-files-size", 0)) if summary else 0,
            "snapshots": len(table.metadata.snapshots),
            "current_snapshot": snapshot.snapshot_id if snapshot else None,
            "committed_seq": int(summary.get("sensorlake.seq", 0) or 0) if summary else 0,
        }


def _explain(exc: duckdb.Error) -> QueryError:
    text = _clean(exc)
    if "Permission Error" in text or "external access" in text.lower():
        return QueryError(
            text,
            hint="queries may only read the lake's tables; files outside the warehouse and "
            "extensions are off limits",
        )
    if "does not exist" in text and "Table with name" in text:
        return TableNotFound(text, hint="`sensorlake tables` lists the tables")
    return QueryError(text)
