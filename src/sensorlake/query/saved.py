"""Saved queries of the SQL console, in the pipeline's database so that every API node and
every browser sees the same list."""

from __future__ import annotations

import re
import time
from typing import Any

import sqlalchemy as sa

from sensorlake.errors import SavedQueryError
from sensorlake.pipeline.database import SqlStore

NAME = re.compile(r"[^\x00-\x1f/]{1,100}")
MAX_SQL = 100_000


class SavedQueries(SqlStore):
    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        self._table = sa.Table(
            f"{namespace}_saved_queries", self._meta,
            sa.Column("name", sa.String, primary_key=True),
            sa.Column("sql", sa.Text, nullable=False),
            sa.Column("saved_at", sa.Float, nullable=False),
        )

    def list(self) -> list[dict[str, Any]]:
        self._ensure()
        table = self._table
        with self._engine.connect() as con:
            rows = con.execute(sa.select(table.c.name, table.c.sql, table.c.saved_at)
                               .order_by(table.c.name)).all()
        return [{"name": r[0], "sql": r[1], "saved_at": float(r[2])} for r in rows]

    def save(self, name: str, sql: str) -> None:
        """Saves `sql` as `name`, replacing a query of that name."""
        if not NAME.fullmatch(name) or name != name.strip():
            raise SavedQueryError(
                f"the name {name[:120]!r} cannot be used",
                hint="1 to 100 characters, no slash or control characters, no leading or "
                     "trailing spaces")
        if not sql.strip() or len(sql) > MAX_SQL:
            raise SavedQueryError(f"the SQL must be 1 to {MAX_SQL} characters", hint=None)
        self._ensure()
        table = self._table
        with self._engine.begin() as con:
            con.execute(table.delete().where(table.c.name == name))
            con.execute(table.insert().values(name=name, sql=sql, saved_at=time.time()))

    def delete(self, name: str) -> bool:
        self._ensure()
        table = self._table
        with self._engine.begin() as con:
            return bool(con.execute(table.delete().where(table.c.name == name)).rowcount)
