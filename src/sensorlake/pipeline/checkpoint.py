"""Outputs whose state must survive with their position: a checkpoint in the pipeline's
database first, then the step's rows appended to an Iceberg table tagged with the step number.

Some outputs keep state that moves with every reading and is not in their table: the detectors'
rolling windows and alerts (`detect/output.py`), the rollups' open buckets (`rollup/output.py`).
Their state, the position it reflects and the rows the step produced are written in one
database transaction; only then are the rows appended to the table, tagged with the step's
number (`sensorlake.checkpoint`). A crash between the two leaves a checkpoint whose rows the
table lacks, and the next start appends them — so the table never misses a row nor holds one
twice, rows no stream message carries (silence, closed buckets) included.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import sqlalchemy as sa

from sensorlake import faults
from sensorlake.lake.outputs import TableOutput
from sensorlake.lake.tables import POSITION_PROPERTY
from sensorlake.pipeline.database import SqlStore
from sensorlake.stream.partitions import Position

log = logging.getLogger(__name__)

CHECKPOINT_PROPERTY = "sensorlake.checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    position: Position
    number: int
    state: bytes
    """The output's own encoding of its state."""
    rows: bytes | None
    """The rows of this step (Arrow IPC), until the table holds them."""


class CheckpointStore(SqlStore):
    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        self._checkpoints = sa.Table(
            f"{namespace}_output_checkpoint", self._meta,
            sa.Column("output", sa.String, primary_key=True),
            sa.Column("position", sa.Text, nullable=False),
            sa.Column("number", sa.BigInteger, nullable=False),
            sa.Column("state", sa.LargeBinary, nullable=False),
            sa.Column("rows", sa.LargeBinary),
        )

    def checkpoint(self, output: str) -> Checkpoint | None:
        self._ensure()
        table = self._checkpoints
        with self._engine.connect() as con:
            row = con.execute(sa.select(table.c.position, table.c.number, table.c.state,
                                        table.c.rows).where(table.c.output == output)).first()
        if row is None:
            return None
        return Checkpoint(Position.decode(row[0]), int(row[1]), bytes(row[2]),
                          None if row[3] is None else bytes(row[3]))

    def save_checkpoint(self, output: str, checkpoint: Checkpoint) -> None:
        self._ensure()
        table = self._checkpoints
        values = {"position": checkpoint.position.encode(), "number": checkpoint.number,
                  "state": checkpoint.state, "rows": checkpoint.rows}
        with self._engine.begin() as con:
            done = con.execute(table.update().where(table.c.output == output).values(**values))
            if not done.rowcount:
                con.execute(table.insert().values(output=output, **values))


class CheckpointedOutput(TableOutput):
    """The two steps above, for a subclass that says what its state is (`_dump`, `_restore`)
    and what a window makes of it (`_step`)."""

    stateful = True
    """Written with every window, rows or not: its state moves with every reading."""

    store: CheckpointStore
    _number = 0
    _reload = True
    _saved_at: Position | None = None
    """The position of the last checkpoint saved or read."""

    def _start(self) -> Position:
        """Where a never-written output begins."""
        raise NotImplementedError

    def _dump(self) -> bytes:
        raise NotImplementedError

    def _restore(self, state: bytes, position: Position) -> None:
        raise NotImplementedError

    def _emit(self, rows: pa.Table, properties: dict[str, str]) -> None:
        """Append a step's rows with the checkpoint's properties, in one table commit."""
        self._commit(rows, properties)

    def load_position(self) -> Position:
        self._table = self._load()
        checkpoint = self.store.checkpoint(self.name)
        if checkpoint is None:  # never written
            checkpoint = Checkpoint(self._start(), 0, self._dump(), None)
            self.store.save_checkpoint(self.name, checkpoint)
        self._repair(checkpoint)
        self._number = checkpoint.number
        self._saved_at = checkpoint.position
        if self._reload:  # a new session: the state is the checkpoint's
            self._restore(checkpoint.state, checkpoint.position)
            self._reload = False
        return checkpoint.position

    def _repair(self, checkpoint: Checkpoint) -> None:
        held = int(self.table.properties.get(CHECKPOINT_PROPERTY, "0"))
        if held < checkpoint.number and checkpoint.rows:
            # The checkpoint was written and its rows were not appended (a crash between).
            self._emit(from_ipc(checkpoint.rows), properties(checkpoint.number,
                                                             checkpoint.position))
            log.info("%s: appended the rows of checkpoint %s", self.name, checkpoint.number)

    def done(self, through: Position) -> bool:
        """Whether a checkpoint holds `through` already — a write retried after its checkpoint
        was saved, whatever happened to the append: the append is made sure of, and the step
        must not be taken twice."""
        if self._saved_at is None or not self._saved_at.covers(through):
            return False
        checkpoint = self.store.checkpoint(self.name)
        if checkpoint is not None:
            self.table.refresh()
            self._repair(checkpoint)
        return True

    def discard(self) -> None:
        super().discard()
        self._reload = True

    def checkpoint(self, state: bytes, rows: pa.Table | None, through: Position,
                   saved: Callable[[], None] = lambda: None, *, append: bool = True) -> None:
        """Save the state reached through `through` and the rows the table lacks; then append
        them (unless `append` is False: they wait in the checkpoint for a later step, which
        saves them again with its own). `saved` runs once the checkpoint is, before the
        append: state kept in memory must move with the checkpoint, not with the table."""
        number = self._number + 1
        ipc = to_ipc(rows) if rows is not None and rows.num_rows else None
        self.store.save_checkpoint(self.name, Checkpoint(through, number, state, ipc))
        self._number = number
        self._saved_at = through
        saved()
        if append and rows is not None and ipc is not None:
            self._faults.hit(faults.AFTER_CHECKPOINT)
            self._emit(rows, properties(number, through))


def properties(number: int, through: Position) -> dict[str, str]:
    return {CHECKPOINT_PROPERTY: str(number), POSITION_PROPERTY: through.encode()}


def to_ipc(rows: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)
    return sink.getvalue()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()

