"""The agent's store-and-forward queue: a bounded FIFO of readings in one SQLite file.

Every reading goes through it, connected or not, so order holds across broker outages and
restarts of the agent itself. SQLite (WAL, synchronous=FULL) because a power cut on a device is
routine: a committed row survives it, a half-written one never appears. The AUTOINCREMENT key
never reuses an id, so "oldest first" is simply "lowest id first", even after deletes.

One thread owns a queue (the agent's main loop); the MQTT thread only reports acknowledgements
to it, so there is one writer and no locking here.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sensorlake.errors import AgentError

QUEUE_FILE = "queue.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0);
"""


@dataclass(frozen=True)
class Queued:
    """One stored reading; `id` orders it and names it when its PUBACK arrives."""

    id: int
    topic: str
    payload: bytes


@dataclass(frozen=True)
class QueueStatus:
    """What `sensorlake agent --status` shows, read without connecting anywhere."""

    path: str
    queued: int
    dropped: int
    max_size: int
    oldest_id: int | None
    newest_id: int | None


class ReadingQueue:
    """A durable FIFO that keeps at most `max_size` readings, dropping (and counting) the oldest.

    Dropping the oldest rather than refusing the newest: after a long outage the recent readings
    are the ones worth having, and the count of what was lost is kept with the queue so it
    survives restarts and can be reported.
    """

    def __init__(self, folder: Path, max_size: int) -> None:
        if max_size < 1:
            raise AgentError(f"the queue must hold at least one reading, not {max_size}",
                             hint="pass --queue-max 1 or more")
        self.max_size = max_size
        self.path = folder / QUEUE_FILE
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise AgentError(f"cannot open the agent queue at {self.path}: {exc}",
                             hint="pass --queue-dir with a folder this user may write") from exc

    def put(self, items: list[tuple[str, bytes]]) -> int:
        """Store readings in order; returns how many old ones were dropped to make room."""
        with self._transaction():
            self._db.executemany("INSERT INTO readings (topic, payload) VALUES (?, ?)", items)
            excess = len(self) - self.max_size
            if excess <= 0:
                return 0
            self._db.execute(
                "DELETE FROM readings WHERE id IN (SELECT id FROM readings ORDER BY id LIMIT ?)",
                (excess,))
            self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'",
                             (excess,))
            return excess

    def peek(self, after_id: int, limit: int) -> list[Queued]:
        """The oldest readings with an id above `after_id` (those not yet handed to MQTT)."""
        rows = self._db.execute(
            "SELECT id, topic, payload FROM readings WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit)).fetchall()
        return [Queued(int(i), str(t), bytes(p)) for i, t, p in rows]

    def remove(self, ids: list[int]) -> None:
        """Forget readings the broker acknowledged (ids already dropped are ignored)."""
        if ids:
            with self._transaction():
                self._db.executemany("DELETE FROM readings WHERE id = ?", [(i,) for i in ids])

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM readings").fetchone()[0])

    @property
    def dropped(self) -> int:
        """Readings dropped over the queue's whole life, not just this run."""
        return int(self._db.execute(
            "SELECT value FROM counters WHERE name = 'dropped'").fetchone()[0])

    def status(self) -> QueueStatus:
        low, high = self._db.execute("SELECT min(id), max(id) FROM readings").fetchone()
        return QueueStatus(str(self.path), len(self), self.dropped, self.max_size, low, high)

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on error: an insert and the drop it causes are one
    step, so a crash between them cannot leave the queue over its bound or the counter wrong."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, _tb: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error as failed:
                exc = failed
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            # Typically a full disk on the device: nothing more can be queued or forgotten.
            raise AgentError(f"the agent queue cannot be written: {exc}",
                             hint="free space in --queue-dir (or lower --queue-max)") from exc
