"""The contract every output of the pipeline keeps, so that exactly-once is proven once.

An output is anything durable the stream is written into: the telemetry and dead_letter tables
today; rule tables, anomalies, device state and rollups next. Each one

- takes every decoded batch as it is read (`add`, on the event loop: cheap, it only keeps the
  rows it will write — each row carrying the `stream` and `seq` of the message it came from);
- hands over what it took since the last commit (`seal`), which the pipeline writes with
  `write(rows, through)` in a thread: the rows *and* the position they bring it to, in one
  atomic step of its own destination (one Iceberg metadata commit; one database transaction);
- reports, on start and after any error, the position its destination holds (`load_position`).

Everything else — skipping what an output already holds, retrying, telling a failure of the
destination from a reading it cannot take, and isolating such readings into dead_letter — is
the pipeline's (`commit.py`), the same for every output.
"""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa

from sensorlake.lake.records import DecodedBatch
from sensorlake.stream.partitions import Position


class Output(Protocol):
    name: str
    """Names the output in logs and metrics, and the position of its rejected rows."""
    hold_s: float
    """Seconds its sealed rows may wait in the worker for later windows, to be written together
    (rule tables, under load); 0: written with every window. Until then its position stays, so
    the messages are not acknowledged."""

    def load_position(self) -> Position:
        """What the destination holds (blocking I/O)."""
        ...

    def add(self, batch: DecodedBatch) -> None:
        ...

    def seal(self) -> pa.Table | None:
        """The rows taken since the last seal, in arrival order (None if there were none)."""
        ...

    def write(self, rows: pa.Table | None, through: Position) -> None:
        """Store `rows` and record `through` atomically; with no rows, the position alone.
        Raises on failure; the pipeline then checks `load_position` before anything else."""
        ...

    def discard(self) -> None:
        """Forget what was added and not sealed (the pipeline starts over from the lake)."""
        ...

    def note_rejected(self, readings: int, error: str) -> None:
        """The pipeline set `readings` of this output's apart into dead_letter (for counters)."""
        ...


class RejectSink(Protocol):
    """Where rows an output cannot store go (the dead_letter table), exactly once per output."""

    def reject(self, origin: str, dead: pa.Table, through: Position) -> None:
        """Store dead-letter rows `dead` that output `origin` could not take, recording
        `through` as `origin`'s rejection position in the same commit; rows that position
        already covers are skipped, so a replay stores nothing twice."""
        ...
