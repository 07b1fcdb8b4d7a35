"""Read-only SQL over the lake with DuckDB.

Each query gets a fresh in-memory DuckDB whose views read the current snapshot's Parquet files in
place, plus — when given — the uncommitted tail as an Arrow table, so that a reading is queryable
the moment the writer has it. Then the connection is locked down: file access only inside the
warehouse, no extensions, no configuration changes; and only a single SELECT (or a plain EXPLAIN
of one) is accepted. Each query is bounded by `[query]` timeout, memory_limit and threads, so one
query can neither run forever nor starve ingest of CPU or memory.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from urllib.parse import unquote, urlparse, urlsplit

import duckdb
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.conversions import from_bytes
from pyiceberg.exceptions import NoSuchNamespaceError
from pyiceberg.io import FileIO
from pyiceberg.manifest import DataFileContent, ManifestFile
from pyiceberg.table import Table
from pyiceberg.types import TimestamptzType

from sensorlake.config import Config
from sensorlake.errors import LakeError, QueryError, SensorlakeError, TableNotFound
from sensorlake.lake.catalog import catalog_properties, mask_uri, open_catalog
from sensorlake.lake.maintenance import TableReport, last_reports
from sensorlake.lake.records import after
from sensorlake.lake.tables import TELEMETRY, load_table, read_position, table_totals
from sensorlake.query.parse import base_tables, function_names, syntax_tree
from sensorlake.query.prune import TIME_COLUMN, TimeBounds, bounds_in
from sensorlake.query.results import QueryResult, first_rows
from sensorlake.state import view as state_view
from sensorlake.state.records import DEVICE_STATE
from sensorlake.state.store import StateStore

MANIFEST_CACHE = 20_000
"""Manifests whose file lists are kept (a few KB each): a year of compacted days is far less."""
_ANALYZE = {"ANALYZE", "ANALYSE"}
_HIDDEN_SQL = {"query", "json_execute_serialized_sql"}
"""Table functions that run SQL given as a string: the guard cannot see what that string holds
(it may be built while the query runs), so it cannot vouch for it."""
_CHANGES_STATE = {
    "checkpoint", "force_checkpoint", "truncate_duckdb_logs", "write_log",
    "enable_logging", "disable_logging", "enable_profiling", "disable_profiling",
    "add_grammar_extension", "remove_grammar_extension",
    "create_external_resource", "register_external_resource", "destroy_external_resource",
    "deregister_external_resource", "register_external_resource_type",
    "nextval", "setval",
}
"""Functions callable from a SELECT that change the engine's state rather than read data. Most
are stopped by `lock_configuration` as well; refusing them up front gives a clear message and
does not rest on that alone."""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _local_path(location: str) -> str:
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        # As pyiceberg maps it to a file: the path as it stands, never percent-decoded.
        return parsed.path if parsed.scheme else location
    raise QueryError(
        f"the warehouse is at {parsed.scheme}://, which the embedded query engine cannot read",
        hint="query it with an Iceberg engine (Trino, Spark, Athena) or use a local warehouse",
    )


@dataclass(frozen=True)
class CheckedQuery:
    """A query that passed the read-only check, parsed once for everything that follows."""

    sql: str
    tree: dict[str, Any]
    """DuckDB's parse of the SELECT that runs (the one an EXPLAIN wraps)."""

    @cached_property
    def tables(self) -> set[str] | None:
        """The tables it reads, lower case as DuckDB matches names; None when it names them
        at run time (`query_table(…)`) and may read any."""
        if "query_table" in set(function_names(self.tree)):
            return None
        return {name.lower() for name in base_tables(self.tree)}

    def reads(self, table: str) -> bool:
        tables = self.tables
        return tables is None or table.lower() in tables


def check_query(sql: str) -> CheckedQuery:
    return CheckedQuery(sql, check_read_only(sql))


def check_read_only(sql: str) -> dict[str, Any]:
    """One SELECT, or a plain EXPLAIN of one; anything else is refused before it runs.

    EXPLAIN ANALYZE runs what it explains, so it is refused whatever it wraps, and a plain EXPLAIN
    must wrap a SELECT. DuckDB's own parser and tokenizer decide what the text is, so comments,
    case and line breaks cannot disguise a statement.
    """
    statement = _one_statement(sql)
    if statement.type == duckdb.StatementType.EXPLAIN:
        statement = _explained(statement.query)
    elif statement.type != duckdb.StatementType.SELECT:
        raise QueryError(
            f"{_kind(statement)} statements are not allowed: queries are read-only",
            hint="only SELECT is accepted; the lake is written by the pipeline alone",
        )
    return _check_functions(statement.query)


def _one_statement(sql: str) -> duckdb.Statement:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL syntax error: {_clean(exc)}") from None
    if len(statements) != 1:
        raise QueryError(
            f"expected exactly one statement, got {len(statements)}",
            hint="send a single SELECT",
        )
    return statements[0]


def _kind(statement: duckdb.Statement) -> str:
    return str(statement.type).rsplit(".", 1)[-1]


def _explained(sql: str) -> duckdb.Statement:
    """The SELECT an EXPLAIN statement wraps; QueryError for EXPLAIN ANALYZE or anything else.

    DuckDB's Python API does not expose what an EXPLAIN wraps, so its tokens are read: after
    EXPLAIN comes either the statement or a parenthesised option list and then the statement.
    `EXPLAIN (SELECT 1)` is both shapes at once, so every reading whose rest parses as one
    statement must be safe, whichever of them DuckDB picks.
    """
    words = _words(sql)  # words[0] is EXPLAIN: DuckDB said so
    if len(words) > 1 and words[1][1].upper() in _ANALYZE:
        raise _analyze_refused()
    readings: list[tuple[list[str], int]] = [([], 1)]  # (options, index of the statement)
    if len(words) > 1 and words[1][1] == "(":
        depth = 0
        for index, (_, text) in enumerate(words[1:], start=1):
            depth += (text == "(") - (text == ")")
            if depth == 0:
                readings.append(([t for _, t in words[2:index]], index + 1))
                break
    explained: list[duckdb.Statement] = []
    for options, index in readings:
        rest = sql[words[index][0]:] if index < len(words) else ""
        try:
            statements = duckdb.extract_statements(rest)
        except duckdb.Error:
            continue  # not this reading
        if len(statements) != 1:
            continue
        if any(option.upper() in _ANALYZE for option in options):
            raise _analyze_refused()
        explained.append(statements[0])
    if not explained:
        raise QueryError(
            "EXPLAIN must wrap a single SELECT",
            hint="send EXPLAIN SELECT …, or EXPLAIN (FORMAT json) SELECT …",
        )
    for statement in explained:
        if statement.type != duckdb.StatementType.SELECT:
            raise QueryError(
                f"EXPLAIN of {_kind(statement)} statements is not allowed: queries are "
                "read-only",
                hint="only SELECT (and EXPLAIN SELECT …) is accepted; the lake is written by the "
                "pipeline alone",
            )
    return explained[0]


def _words(sql: str) -> list[tuple[int, str]]:
    """(offset, text) of each token that is not a comment."""
    tokens = duckdb.tokenize(sql)
    words: list[tuple[int, str]] = []
    for index, (offset, kind) in enumerate(tokens):
        end = tokens[index + 1][0] if index + 1 < len(tokens) else len(sql)
        if kind != duckdb.token_type.comment:
            words.append((offset, sql[offset:end].strip()))
    return words


def _analyze_refused() -> QueryError:
    return QueryError(
        "EXPLAIN ANALYZE is not allowed: it runs the statement it explains",
        hint="use EXPLAIN without ANALYZE to see the plan of a SELECT",
    )


def _check_functions(select: str) -> dict[str, Any]:
    """Refuse a SELECT that calls a function which runs hidden SQL or changes state; reading
    functions (read_parquet, glob, …) stay, confined to the warehouse by the connection."""
    tree = syntax_tree(select)
    if tree.get("error"):
        raise QueryError(
            f"the query could not be checked: {tree.get('error_message', 'unknown error')}",
            hint="send a plain SELECT",
        )
    for name in function_names(tree):
        if name in _HIDDEN_SQL:
            raise QueryError(
                f"{name}() is not allowed: it runs SQL that the read-only check cannot see",
                hint="write that SQL into the query itself",
            )
        if name in _CHANGES_STATE:
            raise QueryError(
                f"{name}() is not allowed: it changes the engine's state and queries are "
                "read-only",
                hint="only reading functions may be used in a query",
            )
    return tree


def _clean(exc: Exception) -> str:
    return " ".join(str(exc).split())


class _Deadline:
    """Interrupts a connection once `seconds` have passed: DuckDB has no statement timeout.

    The lock keeps the timer from interrupting a connection that is already being closed.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, seconds: float) -> None:
        self._con = con
        self._lock = threading.Lock()
        self._over = False
        self.passed = False
        self._timer = threading.Timer(seconds, self._interrupt)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._over = True

    def _interrupt(self) -> None:
        with self._lock:
            if not self._over:
                self.passed = True
                self._con.interrupt()


class _Databases:
    """Idle DuckDB databases, each configured and locked once: opening one costs ~20 ms, more
    than a small query. A query has one to itself, so `query.memory_limit` stays per query, and
    works in a fresh connection to it, whose views and registered tails go when it closes."""

    KEEP = 4

    def __init__(self, config: Config) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._idle: list[duckdb.DuckDBPyConnection] = []

    def _open(self) -> duckdb.DuckDBPyConnection:
        limits = self._config.query
        db = duckdb.connect(":memory:", config={
            "autoinstall_known_extensions": "false",
            "autoload_known_extensions": "false",
            "memory_limit": limits.memory_limit,
            "threads": str(limits.threads),
            # No spilling: memory_limit is then a real bound, and nothing is written to a
            # `.tmp` in whatever directory `up` was started from.
            "temp_directory": "",
        })
        warehouse = _local_path(self._config.warehouse).rstrip("/") + "/"
        db.execute("SET allowed_directories = ?", [[warehouse]])
        db.execute("SET enable_external_access = false")
        db.execute("SET lock_configuration = true")
        return db

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            db = self._idle.pop() if self._idle else None
        if db is None:
            db = self._open()
        con = db.cursor()
        try:
            yield con
        finally:
            con.close()
            with self._lock:
                if len(self._idle) < self.KEEP:
                    self._idle.append(db)
                    db = None
            if db is not None:
                db.close()


class QueryEngine:
    def __init__(self, config: Config, catalog: Catalog | None = None) -> None:
        self._config = config
        if catalog is None:
            try:
                catalog = open_catalog(config)
            except SensorlakeError:
                raise
            except Exception as exc:  # a SQL catalog connects as it opens
                raise catalog_unreadable(config, exc) from exc
        self._catalog = catalog
        self._namespace = config.lake.namespace
        self._databases = _Databases(config)
        self._cache_lock = threading.Lock()
        self._lists: dict[str, tuple[str, list[str]]] = {}
        """Per table: the manifest list of the newest snapshot asked for, and its manifests."""
        self._manifests: OrderedDict[str, list[tuple[str, int | None, int | None]]] = (
            OrderedDict())
        """Per manifest: (local path, lowest ts, highest ts) of each live data file in it."""

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def table_names(self) -> list[str]:
        """The lake's tables; [] only while nothing was ever written (no namespace yet).

        Any other failure is an outage and says so: answering "no tables" would turn it into
        "table does not exist" for every query.
        """
        try:
            identifiers = self._catalog.list_tables(self._namespace)
        except NoSuchNamespaceError:
            return []
        except Exception as exc:
            raise catalog_unreadable(self._config, exc) from exc
        return sorted(ident[-1] for ident in identifiers)

    def load(self, name: str) -> Table:
        try:
            return load_table(self._catalog, self._namespace, name)
        except SensorlakeError:
            raise  # TableNotFound: the catalog answered, the table is not there
        except Exception as exc:
            raise catalog_unreadable(self._config, exc) from exc

    @cached_property
    def state(self) -> StateStore:
        return StateStore.for_config(self._config)

    def device_state(self, tail: pa.Table | None = None) -> pa.Table:
        """The `device_state` table: committed device state with `tail` merged in."""
        return state_view.table(state_view.current(self.state, tail), self._config)

    def view_names(self) -> list[str]:
        """The saved views (`[[views]]`), which queries read like tables."""
        return [view.name for view in self._config.views]

    def reads(self, checked: CheckedQuery, table: str) -> bool:
        """Whether the query reads `table`, itself or through a saved view."""
        needed = self._needed(checked)
        return needed is None or table.lower() in needed

    def needs_tail(self, checked: CheckedQuery) -> bool:
        """Whether the stream's uncommitted telemetry readings are part of the answer: for
        `telemetry`, and for `device_state`, which they move on too."""
        return self.reads(checked, TELEMETRY) or self.reads(checked, DEVICE_STATE)

    def _needed(self, checked: CheckedQuery) -> set[str] | None:
        """The tables and views a query reads, through the views it names; None: any."""
        needed = checked.tables
        if needed is None:
            return None
        needed = set(needed)
        for name, reads in reversed(self._view_reads):  # a view reads only those above it
            if name in needed:
                if reads is None:
                    return None
                needed |= reads
        return needed

    @cached_property
    def _view_reads(self) -> list[tuple[str, set[str] | None]]:
        """Each saved view and the tables it reads, parsed once: not again for every query."""
        return [(view.name, check_query(view.sql).tables) for view in self._config.views]

    def execute(
        self,
        query: str | CheckedQuery,
        *,
        tails: Mapping[str, pa.Table | None] | None = None,
        loaded: Mapping[str, Table] | None = None,
        max_rows: int | None = None,
        notes: list[str] | None = None,
    ) -> QueryResult:
        started = time.perf_counter()
        checked = query if isinstance(query, CheckedQuery) else check_query(query)
        tails = tails or {}
        limits = self._config.query
        with self._databases.connection() as con:
            uncommitted = self._create_views(con, checked, tails, bounds_in(checked.tree),
                                             loaded or {})
            limit = max_rows if max_rows is not None else limits.max_rows
            with _Deadline(con, limits.timeout) as deadline:
                try:
                    relation = con.sql(checked.sql)
                    description = relation.description or []
                    table = first_rows(relation, limit + 1)
                except duckdb.Error as exc:
                    raise self._failure(exc, timed_out=deadline.passed) from None
            truncated = table.num_rows > limit
            return QueryResult(
                columns=[d[0] for d in description],
                types=[str(d[1]) for d in description],
                table=table.slice(0, limit),
                truncated=truncated,
                uncommitted_rows=uncommitted,
                elapsed_ms=(time.perf_counter() - started) * 1000,
                notes=list(notes or []),
            )

    def _create_views(self, con: duckdb.DuckDBPyConnection, checked: CheckedQuery,
                      tails: Mapping[str, pa.Table | None], bounds: TimeBounds | None = None,
                      loaded: Mapping[str, Table] | None = None) -> int:
        """Views of the tables the query names, each loaded and planned; the lake's other
        tables cost it nothing."""
        uncommitted = 0
        needed = self._needed(checked)
        views = self.view_names()
        loaded = loaded or {}
        # The tables already loaded (telemetry, for its tail) are all a query of them needs:
        # the catalog is not listed again.
        known = needed is not None and needed <= {*loaded, *views, DEVICE_STATE}
        for name in (sorted(n for n in loaded if n in needed) if known and needed is not None
                     else self.table_names()):
            if name in views or (needed is not None and name.lower() not in needed):
                continue  # a view of the same name shadows a lake table
            table = loaded.get(name) or self.load(name)
            files = self._data_files(
                name, table, bounds if bounds is not None and bounds.table == name else None)
            # The table's own schema always takes part: the files read (fewer when pruned)
            # may lack columns the table has, and a query naming one must still bind.
            empty = f"__empty_{name}"
            con.register(empty, table.schema().as_arrow().empty_table())
            parts = [f"SELECT * FROM {quote_ident(empty)}"]
            if files:
                listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                parts.append(f"SELECT * FROM read_parquet([{listing}], union_by_name = true)")
            tail = tails.get(name)
            if tail is not None and tail.num_rows:
                # The tail was taken before this snapshot was loaded; a commit in between
                # would otherwise show its readings twice.
                tail = after(tail, read_position(table))
            if tail is not None and tail.num_rows:
                tail_name = f"__uncommitted_{name}"
                con.register(tail_name, tail)
                parts.append(f"SELECT * FROM {quote_ident(tail_name)}")
                uncommitted += tail.num_rows
            con.execute(
                f"CREATE TEMP VIEW {quote_ident(name)} AS " + " UNION ALL BY NAME ".join(parts)
            )
        if needed is None or DEVICE_STATE in needed:  # no view may take its name
            con.register(DEVICE_STATE, self.device_state(tails.get(TELEMETRY)))
        for view in self._config.views:
            if needed is None or view.name in needed:
                try:
                    con.execute(f"CREATE TEMP VIEW {quote_ident(view.name)} AS {view.sql}")
                except duckdb.Error as exc:
                    raise QueryError(f"the saved view '{view.name}' cannot be read: "
                                     f"{_clean(exc)}",
                                     hint=f"fix views.{view.name}.sql in sensorlake.toml "
                                          "(`sensorlake query` it on its own to see why)"
                                     ) from None
        return uncommitted

    def _data_files(self, name: str, table: Table, bounds: TimeBounds | None = None
                    ) -> list[str]:
        """Data files of the current snapshot that the query can need.

        Manifests never change once written, so each is read once and kept (its live files and
        their `ts` ranges); a new snapshot costs reading its manifest list and the manifests it
        adds, not every manifest of the table's history. With `bounds`, files whose `ts` range
        lies outside them are left out.
        """
        snapshot = table.current_snapshot()
        if snapshot is None:
            return []
        with self._cache_lock:
            listed = self._lists.get(name)
        if listed is None or listed[0] != snapshot.manifest_list:
            manifests = snapshot.manifests(table.io)
            field = next((f.field_id for f in table.schema().fields if f.name == TIME_COLUMN),
                         None)
            with self._cache_lock:
                known = set(self._manifests)
            read = {m.manifest_path: _live_files(m, table.io, field) for m in manifests
                    if m.manifest_path not in known}
            with self._cache_lock:
                self._manifests.update(read)
                listed = (snapshot.manifest_list, [m.manifest_path for m in manifests])
                self._lists[name] = listed
        files: list[str] = []
        with self._cache_lock:
            for path in listed[1]:
                entries = self._manifests.get(path)
                if entries is None:
                    break
                self._manifests.move_to_end(path)
                files.extend(f for f, low, high in entries
                             if bounds is None or bounds.overlaps(low, high))
            else:
                while len(self._manifests) > MANIFEST_CACHE:
                    self._manifests.popitem(last=False)
                return files
            self._lists.pop(name, None)  # a manifest was evicted meanwhile: list again
        return self._data_files(name, table, bounds)

    def describe(self, name: str) -> dict[str, Any]:
        if name == DEVICE_STATE:
            return self._describe_state()
        table = self.load(name)
        snapshot = table.current_snapshot()
        totals = table_totals(table)
        return {
            "table": name,
            "location": table.location(),
            "columns": [
                {"name": f.name, "type": str(f.field_type), "doc": f.doc or ""}
                for f in table.schema().fields
            ],
            "partitioning": [str(f) for f in table.spec().fields],
            "rows": totals.rows,
            "files": totals.files,
            "size_bytes": totals.bytes,
            "avg_file_bytes": totals.bytes // totals.files if totals.files else 0,
            "snapshots": totals.snapshots,
            "metadata_bytes": totals.metadata_bytes,
            "current_snapshot": snapshot.snapshot_id if snapshot else None,
            "position": dict(read_position(table).seqs),
            "last_maintenance": _last_maintenance(self._config, name),
        }

    def _describe_state(self) -> dict[str, Any]:
        """device_state is no Iceberg table: its columns, rows and where it is kept."""
        state = self.device_state()
        position = self.state.position(DEVICE_STATE)
        return {
            "table": DEVICE_STATE,
            "location": mask_uri(self.state.url),
            "columns": [{"name": f.name, "type": str(f.type), "doc": ""} for f in state.schema],
            "rows": state.num_rows,
            "position": dict(position.seqs) if position else {},
        }

    def _failure(self, exc: duckdb.Error, *, timed_out: bool) -> QueryError:
        """A limit that stopped the query names its key; anything else as DuckDB put it."""
        limits = self._config.query
        if timed_out and isinstance(exc, duckdb.InterruptException):
            return QueryError(
                f"the query ran longer than query.timeout ({limits.timeout:g} s) and was stopped",
                hint="make it cheaper (filter on ts, aggregate, add a LIMIT) or raise "
                "query.timeout ([query] timeout in sensorlake.toml, or SENSORLAKE_QUERY__TIMEOUT)",
            )
        if isinstance(exc, duckdb.OutOfMemoryException) or "Out of Memory Error" in str(exc):
            # Only DuckDB's first line: its advice (SET threads, SET memory_limit) is refused here.
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
            return QueryError(
                f"the query needed more memory than query.memory_limit ({limits.memory_limit}) "
                f"allows: {first}",
                hint="make it need less (filter on ts, fewer columns, aggregate before sorting or "
                "joining) or raise query.memory_limit ([query] memory_limit in sensorlake.toml, "
                "or SENSORLAKE_QUERY__MEMORY_LIMIT)",
            )
        return _explain(exc)


def _live_files(manifest: ManifestFile, io: FileIO, time_field: int | None
                ) -> list[tuple[str, int | None, int | None]]:
    """(local path, lowest ts, highest ts) of each live data file a manifest lists."""
    found = []
    for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
        data = entry.data_file
        if data.content != DataFileContent.DATA:
            continue
        low = high = None
        if time_field is not None:
            lower = (data.lower_bounds or {}).get(time_field)
            upper = (data.upper_bounds or {}).get(time_field)
            if lower is not None and upper is not None:
                low = int(from_bytes(TimestamptzType(), lower))
                high = int(from_bytes(TimestamptzType(), upper))
        found.append((_local_path(data.file_path), low, high))
    return found


def _last_maintenance(config: Config, table: str) -> str:
    """When maintenance last ran on `table` and what it did, in one line ("never" if not)."""
    report = last_reports(config.data_dir).get(table)
    if not report:
        return "never"
    at = datetime.fromtimestamp(float(report.get("started_at", 0)), UTC).isoformat(
        timespec="seconds")
    return f"{at}: {TableReport(**report).summary()}"


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


_SECRET_KEYS = ("password", "secret", "token", "credential", "key")


def catalog_unreadable(config: Config, exc: Exception) -> LakeError:
    """The catalog could not be read: which one (credentials masked), why, and what to check."""
    props = catalog_properties(config)
    kind = props.get("type") or "pyiceberg"
    uri = props.get("uri", "")
    where = f"{kind} catalog at {mask_uri(uri)}" if uri else f"{kind} catalog"
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's own error
    lines = str(cause).strip().splitlines()
    text = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    secrets = [v for k, v in props.items() if any(word in k.lower() for word in _SECRET_KEYS)]
    password = urlsplit(uri).password if uri else None
    secrets += [password, unquote(password)] if password else []
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    default = "" if config.lake.catalog else f" (the default is {config.data_dir / 'catalog.db'})"
    return LakeError(
        f"the lake catalog ({where}) could not be read: {text}",
        hint=f"check that the catalog is reachable, readable and intact{default}, and that "
        "lake.catalog names it correctly; then retry",
    )
