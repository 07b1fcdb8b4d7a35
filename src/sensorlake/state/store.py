"""Where device state lives: a SQLite file in the data dir, or the catalog's PostgreSQL.

The records and the position they bring the output to are written in one transaction — the
output contract's atomic step for a database — so a crash at any point leaves either both or
neither. Readers (the API, `sensorlake devices state`, SQL queries) read committed records only;
SQLite's write-ahead log lets them do so while the worker writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
import sqlalchemy as sa

from sensorlake.errors import LakeError
from sensorlake.lake.catalog import mask_uri
from sensorlake.pipeline.database import SqlStore, set_position
from sensorlake.state.records import DeviceState, values_json
from sensorlake.stream.partitions import Position

log = logging.getLogger(__name__)

class StateStore(SqlStore):
    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        self._records = sa.Table(
            f"{namespace}_device_state", self._meta,
            sa.Column("device_id", sa.String, primary_key=True),
            sa.Column("source", sa.String, primary_key=True),
            sa.Column("topic", sa.String),
            sa.Column("ts", sa.BigInteger, nullable=False),
            sa.Column("received_at", sa.BigInteger, nullable=False),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("stream", sa.String, nullable=False),
            sa.Column("fields", sa.Text, nullable=False),
            sa.Column("first_ts", sa.BigInteger, nullable=False),
            sa.Column("first_received", sa.BigInteger, nullable=False),
            sa.Column("last_received", sa.BigInteger, nullable=False),
            sa.Column("messages", sa.BigInteger, nullable=False),
            sa.Column("readings", sa.BigInteger, nullable=False),
        )

    def position(self, output: str) -> Position | None:
        """What the store holds for `output`; None when it never wrote."""
        self._ensure()
        with self._engine.connect() as con:
            text = con.execute(sa.select(self._positions.c.position)
                               .where(self._positions.c.output == output)).scalar()
        return None if text is None else Position.decode(text)

    def apply(self, output: str, states: list[DeviceState], through: Position,
              before_commit: Callable[[], None] | None = None) -> None:
        """Merge `states` into the records and record `through`, in one transaction."""
        from sensorlake.state.records import merge_all

        self._ensure()
        records, positions = self._records, self._positions
        with self._engine.begin() as con:
            held: dict[tuple[str, str], DeviceState] = {}
            devices = sorted({s.device_id for s in states})
            for start in range(0, len(devices), 500):
                chunk = devices[start:start + 500]
                for row in con.execute(sa.select(records)
                                       .where(records.c.device_id.in_(chunk))):
                    state = _state(row._mapping)
                    held[(state.device_id, state.source)] = state
            known = set(held)
            merge_all(held, states)
            touched = {(s.device_id, s.source) for s in states}
            updates = [_row(held[k]) for k in touched if k in known]
            inserts = [_row(held[k]) for k in touched if k not in known]
            if updates:
                key = sa.and_(records.c.device_id == sa.bindparam("k_device"),
                              records.c.source == sa.bindparam("k_source"))
                con.execute(records.update().where(key).values(
                    {c: sa.bindparam(f"v_{c}") for c in _VALUE_COLUMNS}),
                    [{"k_device": r["device_id"], "k_source": r["source"],
                      **{f"v_{c}": r[c] for c in _VALUE_COLUMNS}} for r in updates])
            if inserts:
                con.execute(records.insert(), inserts)
            set_position(con, positions, output, through.encode())
            if before_commit is not None:
                before_commit()

    def read(self, device: str | None = None) -> list[DeviceState]:
        """Every record (of one device), device by device."""
        self._ensure()
        query = sa.select(self._records).order_by(self._records.c.device_id,
                                                  self._records.c.source)
        if device is not None:
            query = query.where(self._records.c.device_id == device)
        try:
            with self._engine.connect() as con:
                return [_state(row._mapping) for row in con.execute(query)]
        except sa.exc.SQLAlchemyError as exc:
            raise LakeError(f"device state cannot be read from {mask_uri(self.url)}: "
                            f"{str(exc).splitlines()[0]}",
                            hint="check that the database is reachable (docs/operations.md)"
                            ) from exc


_VALUE_COLUMNS = ("topic", "ts", "received_at", "seq", "stream", "fields", "first_ts",
                  "first_received", "last_received", "messages", "readings")


def _row(state: DeviceState) -> dict[str, Any]:
    return {"device_id": state.device_id, "source": state.source, "topic": state.topic,
            "ts": state.ts, "received_at": state.received_at, "seq": state.seq,
            "stream": state.stream, "fields": values_json(state.values),
            "first_ts": state.first_ts, "first_received": state.first_received,
            "last_received": state.last_received, "messages": state.messages,
            "readings": state.readings}


def _state(row: Any) -> DeviceState:
    return DeviceState(
        device_id=row["device_id"], source=row["source"], topic=row["topic"], ts=row["ts"],
        received_at=row["received_at"], seq=row["seq"], stream=row["stream"],
        values=orjson.loads(row["fields"]), first_ts=row["first_ts"],
        first_received=row["first_received"], last_received=row["last_received"],
        messages=row["messages"], readings=row["readings"])
