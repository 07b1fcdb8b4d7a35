"""Writing an output exactly once, whatever fails.

- Before any retry the destination's position is read again: a write whose outcome was
  uncertain (a timeout, a lost answer) that did land is not written a second time.
- A transient failure (the catalog or store unreachable, a full disk, a commit conflict) is
  retried with jittered, capped backoff, for as long as it lasts; the output reports degraded.
- Anything else that fails `TERMINAL_AFTER` times in a row is taken to be about the rows, not the
  destination — once a position-only write shows the destination itself works. The rows are then
  bisected at message boundaries: what can be stored is, and each message that cannot goes to
  dead_letter with the error, so one poison reading never stalls the lake.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import (
    CommitFailedException,
    CommitStateUnknownException,
    NoSuchTableError,
)

from sensorlake.errors import RowsRefused
from sensorlake.lake.records import after
from sensorlake.lake.tables import BASE_COLUMNS, DEAD_LETTER_ARROW, STREAM_FIELD
from sensorlake.metrics import WriterMetrics
from sensorlake.pipeline.output import Output, RejectSink
from sensorlake.stream.partitions import Position

log = logging.getLogger(__name__)

TERMINAL_AFTER = 3
_TRANSIENT_NAMES = {"OperationalError", "InterfaceError", "DisconnectionError", "TimeoutError",
                    "ConnectionError", "EndpointConnectionError", "ReadTimeoutError"}


def is_transient(exc: BaseException) -> bool:
    """Failures of the destination (retry), as opposed to failures about the rows."""
    if isinstance(exc, OSError | TimeoutError | CommitFailedException
                  | CommitStateUnknownException | NoSuchTableError):
        return True
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)


@dataclass
class Health:
    """What a commit is going through, for /healthz: None while all is well."""

    reason: str | None = None
    since: float | None = None
    """Wall-clock time of the first failure in the current run of failures."""

    def fail(self, reason: str) -> None:
        self.reason = reason
        if self.since is None:
            self.since = time.time()

    def ok(self) -> None:
        self.reason = self.since = None


class Committer:
    """Runs each output's writes (in the pipeline's commit thread)."""

    def __init__(self, metrics: WriterMetrics, *, idle_s: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, max_backoff: float = 30.0) -> None:
        self._metrics = metrics
        self._idle_s = idle_s
        self._sleep = sleep
        self._max_backoff = max_backoff
        self._last_write: dict[str, float] = {}
        self.health: dict[str, Health] = {}
        self.stopping = threading.Event()
        """Set when the process is asked to stop: a transient failure is then not retried
        forever (what is not committed stays in the stream, nothing is lost)."""

    def commit(self, output: Output, rows: pa.Table | None, through: Position,
               committed: Position, rejects: RejectSink | None, *, force: bool = False
               ) -> Position:
        """Write `rows` (those `committed` does not hold) and the position `committed` ∪
        `through`; returns the position now committed."""
        if rows is not None:
            rows = after(rows, committed)
            if not rows.num_rows:
                rows = None
        target = committed.merged(through)
        if rows is None and committed.covers(target):
            return committed
        stateful = getattr(output, "stateful", False)  # its state moves with every reading
        if rows is None and not force and not stateful and (
            time.monotonic() - self._last_write.get(output.name, 0.0) < self._idle_s
        ):
            return committed  # nothing to store: the position is written now and then only
        health = self.health.setdefault(output.name, Health())
        delay = 0.2
        failures = 0
        while True:
            try:
                output.write(rows, target)
                break
            except Exception as exc:
                transient = is_transient(exc)
                self._metrics.commit_failures.labels("transient" if transient else "terminal").inc()
                health.fail(f"{output.name}: {type(exc).__name__}: {exc}")
                if self._landed(output, target):
                    log.warning("%s: the write reported %s but did land", output.name, exc)
                    break
                failures += 1
                if isinstance(exc, RowsRefused):  # about the rows: no retry can help
                    failures = max(failures, TERMINAL_AFTER)
                log.error("%s: write up to %s failed (%s, %s): %s", output.name,
                          target.encode(), "transient" if transient else "terminal",
                          failures, exc)
                if (not transient and failures >= TERMINAL_AFTER and rows is not None
                        and rejects is not None and self._destination_works(output, committed)):
                    self._isolate(output, rows, committed, target, rejects)
                    break
                if self.stopping.is_set() and failures >= TERMINAL_AFTER:
                    raise
                self._sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter)
                delay = min(delay * 2, self._max_backoff)
        health.ok()
        self._last_write[output.name] = time.monotonic()
        return target

    @staticmethod
    def _landed(output: Output, target: Position) -> bool:
        try:
            return output.load_position().covers(target)
        except Exception as exc:  # the destination is unreachable: not landed, as far as known
            log.debug("%s: cannot read its position: %s", output.name, exc)
            return False

    @staticmethod
    def _destination_works(output: Output, committed: Position) -> bool:
        """A write of the position it already holds: if even that fails, the destination is
        what is broken, and no reading is to blame."""
        try:
            output.write(None, committed)
        except Exception as exc:
            log.error("%s: even a write of its own position fails (%s): retrying, not "
                      "isolating readings", output.name, exc)
            return False
        return True

    def _isolate(self, output: Output, rows: pa.Table, committed: Position, target: Position,
                 rejects: RejectSink) -> None:
        """Store what can be stored, message by message boundary; reject the rest."""
        position = committed
        parts = [rows]
        while parts:
            part = parts.pop(0)
            reach = position.merged(_through(part, target))
            try:
                output.write(part, reach)
                position = reach
                continue
            except Exception as exc:
                cut = _message_boundary(part)
                if cut is not None:
                    parts[:0] = [part.slice(0, cut), part.slice(cut)]
                    continue
                reason = f"{output.name} cannot store this reading: {type(exc).__name__}: {exc}"
                log.error("%s: rejecting %s rows of one message into dead_letter: %s",
                          output.name, part.num_rows, exc)
                rejects.reject(output.name, dead_rows(part, reason), reach)
                self._metrics.rejected.inc(part.num_rows)
                output.note_rejected(part.num_rows, str(exc))
                position = reach
        output.write(None, target)


def _through(rows: pa.Table, target: Position) -> Position:
    """Per partition, the highest sequence among `rows`."""
    seqs: dict[str, int] = {}
    for name in pc.unique(rows[STREAM_FIELD]).to_pylist():
        if name is None:
            continue
        mask = pc.equal(rows[STREAM_FIELD], name)
        seqs[name] = int(pc.max(rows["seq"].filter(mask)).as_py())
    return Position(seqs, {n: target.identities.get(n, "") for n in seqs})


def _message_boundary(rows: pa.Table) -> int | None:
    """An index near the middle where one message's rows end and the next one's begin; None
    when all rows are of one message."""
    streams = rows[STREAM_FIELD].to_pylist()
    seqs = rows["seq"].to_pylist()
    keys = list(zip(streams, seqs, strict=True))
    if len(set(keys)) < 2:
        return None
    middle = len(keys) // 2
    for offset in range(len(keys)):
        for cut in (middle + offset, middle - offset):
            if 0 < cut < len(keys) and keys[cut] != keys[cut - 1]:
                return cut
    return None


def dead_rows(rows: pa.Table, reason: str) -> pa.Table:
    """Dead-letter records of rows an output could not store: their fields as JSON."""
    records = rows.to_pylist()
    columns: dict[str, list[object]] = {f.name: [] for f in DEAD_LETTER_ARROW}
    for record in records:
        columns["topic"].append(record.get("topic"))
        columns["device_id"].append(record.get("device_id"))
        columns["seq"].append(record.get("seq"))
        columns["received_at"].append(record.get("received_at"))
        columns["reason"].append(reason)
        payload = {k: v for k, v in record.items() if k not in BASE_COLUMNS and v is not None}
        columns["raw"].append(orjson.dumps(payload, default=str,
                                           option=orjson.OPT_NON_STR_KEYS))
        columns[STREAM_FIELD].append(record.get(STREAM_FIELD))
    return pa.table(columns, schema=DEAD_LETTER_ARROW)
