"""What alerting keeps in the pipeline's database (SQLite in the data dir, or the catalog's
PostgreSQL), so that it survives restarts and every node reads the same:

- each notification group's bookkeeping and the queue of notifications to send, changed in one
  transaction, so a notification is never created twice nor lost;
- the log of every attempt to send (copied into the `alert_log` table), the silences, and the
  alerts as the notifier last saw them (what `alerts list` and `/api/v1/alerts` show).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from sensorlake.pipeline.database import SqlStore


@dataclass(frozen=True)
class Notification:
    id: int
    channel: str
    group_key: str
    kind: str
    """firing, resolved or test."""
    body: dict[str, Any]
    created_at: float
    attempts: int


class AlertStore(SqlStore):
    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        meta = self._meta
        self._groups = sa.Table(
            f"{namespace}_alert_groups", meta,
            sa.Column("group_key", sa.String, primary_key=True),
            sa.Column("record", sa.Text, nullable=False),
        )
        self._queue = sa.Table(
            f"{namespace}_notifications", meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("channel", sa.String, nullable=False, index=True),
            sa.Column("group_key", sa.String, nullable=False),
            sa.Column("kind", sa.String, nullable=False),
            sa.Column("body", sa.Text, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False, default=0),
        )
        self._log = sa.Table(
            f"{namespace}_alert_log", meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("at", sa.Float, nullable=False),
            sa.Column("channel", sa.String, nullable=False),
            sa.Column("group_key", sa.String, nullable=False),
            sa.Column("notification", sa.Integer),
            sa.Column("kind", sa.String, nullable=False),
            sa.Column("status", sa.String, nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("latency_ms", sa.Float),
            sa.Column("response_code", sa.Integer),
            sa.Column("error", sa.Text),
        )
        self._silences = sa.Table(
            f"{namespace}_alert_silences", meta,
            sa.Column("device", sa.String, primary_key=True),
            sa.Column("until", sa.Float, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("comment", sa.Text, nullable=False, default=""),
        )
        self._view = sa.Table(
            f"{namespace}_alerts_now", meta,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("alerts", sa.Text, nullable=False),
            sa.Column("at", sa.Float, nullable=False),
        )

    # -- groups and the queue ----------------------------------------------------------------

    def groups(self) -> dict[str, dict[str, Any]]:
        self._ensure()
        with self._engine.connect() as con:
            rows = con.execute(sa.select(self._groups.c.group_key, self._groups.c.record)).all()
        return {key: orjson.loads(record) for key, record in rows}

    def notify(self, group_key: str, record: dict[str, Any] | None,
               notification: tuple[str, str, dict[str, Any]] | None, max_queue: int) -> int:
        """Store the group's bookkeeping (None: forget the group) and queue `notification`
        (channel, kind, body) in one transaction; returns how many old ones were dropped."""
        self._ensure()
        groups, queue = self._groups, self._queue
        dropped = 0
        with self._engine.begin() as con:
            con.execute(groups.delete().where(groups.c.group_key == group_key))
            if record is not None:
                con.execute(groups.insert().values(group_key=group_key,
                                                   record=orjson.dumps(record).decode()))
            if notification is not None:
                channel, kind, body = notification
                con.execute(queue.insert().values(
                    channel=channel, group_key=group_key, kind=kind,
                    body=orjson.dumps(body).decode(), created_at=time.time(), attempts=0))
                waiting = con.execute(sa.select(sa.func.count()).select_from(queue)
                                      .where(queue.c.channel == channel)).scalar() or 0
                if waiting > max_queue:
                    oldest = con.execute(  # not the first: its delivery may be under way
                        sa.select(queue.c.id, queue.c.group_key, queue.c.kind)
                        .where(queue.c.channel == channel).order_by(queue.c.id)
                        .offset(1).limit(waiting - max_queue)).all()
                    for nid, key, old_kind in oldest:
                        con.execute(queue.delete().where(queue.c.id == nid))
                        self._logged(con, channel, key, nid, old_kind, "dropped", 0, None,
                                     None, f"more than alerts.max_queue ({max_queue}) waiting")
                    dropped = len(oldest)
        return dropped

    def next(self, channel: str) -> Notification | None:
        self._ensure()
        queue = self._queue
        with self._engine.connect() as con:
            row = con.execute(sa.select(queue.c.id, queue.c.channel, queue.c.group_key,
                                        queue.c.kind, queue.c.body, queue.c.created_at,
                                        queue.c.attempts)
                              .where(queue.c.channel == channel).order_by(queue.c.id)
                              .limit(1)).first()
        if row is None:
            return None
        return Notification(row[0], row[1], row[2], row[3], orjson.loads(row[4]), row[5],
                            row[6])

    def attempted(self, notification: Notification, status: str, attempts: int,
                  latency_ms: float | None, code: int | None, error: str | None,
                  done: bool) -> None:
        """Log one attempt; `done` (sent, refused or given up) takes it off the queue."""
        self._ensure()
        queue = self._queue
        with self._engine.begin() as con:
            if done:
                con.execute(queue.delete().where(queue.c.id == notification.id))
            else:
                con.execute(queue.update().where(queue.c.id == notification.id)
                            .values(attempts=attempts))
            self._logged(con, notification.channel, notification.group_key, notification.id,
                         notification.kind, status, attempts, latency_ms, code, error)

    def log_attempt(self, channel: str, group_key: str, kind: str, status: str,
                    latency_ms: float | None, code: int | None, error: str | None) -> None:
        """An attempt outside the queue (`sensorlake alerts test`)."""
        self._ensure()
        with self._engine.begin() as con:
            self._logged(con, channel, group_key, None, kind, status, 1, latency_ms, code,
                         error)

    def _logged(self, con: sa.Connection, channel: str, group_key: str,
                notification: int | None, kind: str, status: str, attempts: int,
                latency_ms: float | None, code: int | None, error: str | None) -> None:
        con.execute(self._log.insert().values(
            at=time.time(), channel=channel, group_key=group_key, notification=notification,
            kind=kind, status=status, attempts=attempts, latency_ms=latency_ms,
            response_code=code, error=error[:1000] if error else None))

    def waiting(self) -> dict[str, int]:
        self._ensure()
        queue = self._queue
        with self._engine.connect() as con:
            rows = con.execute(sa.select(queue.c.channel, sa.func.count())
                               .group_by(queue.c.channel)).all()
        return {channel: int(count) for channel, count in rows}

    def prune_log(self, through_id: int, before: float) -> None:
        """Forget attempts the alert_log table holds (up to `through_id`) older than `before`."""
        self._ensure()
        log = self._log
        with self._engine.begin() as con:
            con.execute(log.delete().where(log.c.id <= through_id, log.c.at < before))

    def log_after(self, last_id: int, limit: int = 10_000) -> list[dict[str, Any]]:
        self._ensure()
        log = self._log
        with self._engine.connect() as con:
            rows = con.execute(sa.select(log).where(log.c.id > last_id).order_by(log.c.id)
                               .limit(limit)).mappings().all()
        return [dict(row) for row in rows]

    # -- silences and the alerts as last seen ------------------------------------------------

    def silence(self, device: str, until: float, comment: str = "") -> None:
        self._ensure()
        table = self._silences
        with self._engine.begin() as con:
            con.execute(table.delete().where(table.c.device == device))
            if until > time.time():
                con.execute(table.insert().values(device=device, until=until,
                                                  created_at=time.time(), comment=comment))

    def silences(self) -> dict[str, dict[str, Any]]:
        self._ensure()
        table = self._silences
        now = time.time()
        with self._engine.connect() as con:
            rows = con.execute(sa.select(table).where(table.c.until > now)).mappings().all()
        return {row["device"]: dict(row) for row in rows}

    def show(self, alerts: list[dict[str, Any]]) -> None:
        self._ensure()
        table = self._view
        with self._engine.begin() as con:
            con.execute(table.delete())
            con.execute(table.insert().values(id=1, alerts=orjson.dumps(alerts).decode(),
                                              at=time.time()))

    def shown(self) -> tuple[list[dict[str, Any]], float | None]:
        """The alerts as the notifier last wrote them, and when (None: never)."""
        self._ensure()
        table = self._view
        with self._engine.connect() as con:
            row = con.execute(sa.select(table.c.alerts, table.c.at)).first()
        if row is None:
            return [], None
        alerts: list[dict[str, Any]] = orjson.loads(row[0])
        return alerts, float(row[1])
