"""`<data_dir>/registry.db`: devices and API keys, each in its own table of one SQLite file.

The CLI writes it while `up` reads it, so every use is a short-lived connection in WAL mode, and
each caller creates its table on first use.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

REGISTRY_FILE = "registry.db"
"""The device registry and the API keys (SQLite): who may send what, in one file."""


def registry_path(data_dir: Path) -> Path:
    return data_dir / REGISTRY_FILE


@contextmanager
def registry_db(
    data_dir: Path, schema: str, migrate: Callable[[sqlite3.Connection], None] | None = None
) -> Iterator[sqlite3.Connection]:
    """One transaction on the registry, with `schema` (CREATE TABLE IF NOT EXISTS) applied and
    then `migrate`, which brings a table of an earlier version up to date."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(registry_path(data_dir), timeout=10)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(schema)
        if migrate is not None:
            migrate(db)
        with db:
            yield db
