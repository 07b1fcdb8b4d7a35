"""The durable outbox of side effects that cannot be rolled back (republish, HTTP actions, and
later alert notifications), keyed by the stream message each one comes from.

An effect is sent as soon as its reading is read, not when the pipeline commits, so a republish
takes milliseconds rather than a flush interval. Two positions make that safe:

- `delivered`, written after every successful send: what a restart must not send again;
- the output's own position, written with each commit in one transaction with the effects up to
  it that were not delivered yet — those stay here until sent, across restarts, and the stream
  can let their messages go.

So an effect is lost by no crash, and sent twice only when a crash falls between a send and the
write of `delivered` (each carries a key a receiver can deduplicate by).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import sqlalchemy as sa

from sensorlake.pipeline.database import SqlStore, set_position
from sensorlake.stream.partitions import Position

DELIVERED = "#delivered"


class Effect(NamedTuple):
    stream: str
    seq: int
    idx: int
    """Which result row of its message (a message may hold several readings)."""
    topic: str
    """Where it goes (republish); the reading's topic otherwise."""
    body: bytes


class Outbox(SqlStore):
    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        self._effects = sa.Table(
            f"{namespace}_outbox", self._meta,
            sa.Column("output", sa.String, primary_key=True),
            sa.Column("stream", sa.String, primary_key=True),
            sa.Column("seq", sa.BigInteger, primary_key=True),
            sa.Column("idx", sa.Integer, primary_key=True),
            sa.Column("topic", sa.Text, nullable=False),
            sa.Column("body", sa.LargeBinary, nullable=False),
        )

    def load(self, output: str) -> tuple[Position | None, Position, list[Effect]]:
        """(the output's position or None if it never wrote, what was delivered, the effects
        still to send in order)."""
        self._ensure()
        positions, effects = self._positions, self._effects
        with self._engine.connect() as con:
            found = dict(con.execute(sa.select(positions.c.output, positions.c.position).where(
                positions.c.output.in_([output, output + DELIVERED]))).all())
            pending = [Effect(*row) for row in con.execute(
                sa.select(effects.c.stream, effects.c.seq, effects.c.idx, effects.c.topic,
                          effects.c.body).where(effects.c.output == output)
                .order_by(effects.c.seq, effects.c.stream, effects.c.idx))]
        through = Position.decode(found[output]) if output in found else None
        delivered = (Position.decode(found[output + DELIVERED]) if output + DELIVERED in found
                     else Position())
        return through, delivered, [e for e in pending if not _covers(delivered, e)]

    def commit(self, output: str, pending: list[Effect], through: Position,
               delivered: Position, keep: int,
               before_commit: Callable[[], None] | None = None) -> int:
        """Store `pending` and the position `through` in one transaction, dropping what
        `delivered` covers; beyond `keep` effects the oldest are dropped. Returns how many."""
        self._ensure()
        effects = self._effects
        with self._engine.begin() as con:
            self._forget(con, output, delivered)
            if pending:
                con.execute(effects.insert(), [
                    {"output": output, "stream": e.stream, "seq": e.seq, "idx": e.idx,
                     "topic": e.topic, "body": e.body} for e in pending])
            held = con.execute(sa.select(sa.func.count()).select_from(effects)
                               .where(effects.c.output == output)).scalar() or 0
            dropped = max(0, held - keep)
            if dropped:
                oldest = sa.select(effects.c.stream, effects.c.seq, effects.c.idx).where(
                    effects.c.output == output).order_by(effects.c.seq).limit(dropped)
                for stream, seq, idx in con.execute(oldest).all():
                    con.execute(effects.delete().where(
                        effects.c.output == output, effects.c.stream == stream,
                        effects.c.seq == seq, effects.c.idx == idx))
            set_position(con, self._positions, output, through.encode())
            if before_commit is not None:
                before_commit()
        return dropped

    def delivered(self, output: str, delivered: Position) -> None:
        self._ensure()
        with self._engine.begin() as con:
            set_position(con, self._positions, output + DELIVERED, delivered.encode())
            self._forget(con, output, delivered)

    def _forget(self, con: sa.Connection, output: str, delivered: Position) -> None:
        for stream, seq in delivered.seqs.items():
            con.execute(self._effects.delete().where(
                self._effects.c.output == output, self._effects.c.stream == stream,
                self._effects.c.seq <= seq))


def _covers(position: Position, effect: Effect) -> bool:
    return position.seqs.get(effect.stream, 0) >= effect.seq
