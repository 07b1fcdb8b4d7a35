"""The database of the outputs that are not Iceberg tables (device state, the outbox of side
effects): a SQLite file in the data dir, or the catalog's PostgreSQL when there is one, so that
every node of a cluster reads and writes the same.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sensorlake.config import Config
from sensorlake.lake.catalog import catalog_properties

STATE_FILE = "device_state.db"
_CREATING = threading.Lock()


def database_url(config: Config) -> str:
    props = catalog_properties(config)
    uri = props.get("uri", "")
    if props.get("type") == "sql" and uri.startswith("postgresql"):
        return uri
    return f"sqlite:///{config.data_dir / STATE_FILE}"


def open_database(url: str) -> Engine:
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def positions_table(meta: sa.MetaData, namespace: str) -> sa.Table:
    """Each output's position (Position.encode()), written in the transaction of its rows."""
    return sa.Table(
        f"{namespace}_state_position", meta,
        sa.Column("output", sa.String, primary_key=True),
        sa.Column("position", sa.Text, nullable=False),
    )


def set_position(con: sa.Connection, table: sa.Table, output: str, text: str) -> None:
    done = con.execute(table.update().where(table.c.output == output).values(position=text))
    if not done.rowcount:
        con.execute(table.insert().values(output=output, position=text))


class SqlStore:
    """What an output kept in this database shares: the engine, its positions, tables created
    on first use (by whichever process comes first)."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self._engine: Engine = open_database(url)
        self._meta = sa.MetaData()
        self._positions = positions_table(self._meta, namespace)
        self._created = False

    @classmethod
    def for_config(cls, config: Config) -> Self:
        """The store in this configuration's database (`database_url`)."""
        return cls(database_url(config), config.lake.namespace)

    def _ensure(self) -> None:
        if not self._created:
            with _CREATING:  # threads of one process: one creates, the others wait
                if self._created:
                    return
                try:
                    self._meta.create_all(self._engine, checkfirst=True)
                except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
                    # another process created them meanwhile
                    self._meta.create_all(self._engine, checkfirst=True)
                self._created = True

    def dispose(self) -> None:
        self._engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL: readers never block the worker's writes nor see half of one. FULL: a committed
    position survives a power cut, as the stream's acks that follow it assume."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
