"""The worker loop: one pull, one decode, many outputs — exactly once, whatever crashes.

The lake is the only record of position. A session starts by reading what every output has
committed, and opens a consumer of its own on each partition at the lowest of those positions + 1;
each output skips what it already holds. Any error of the stream (a lost delivery, a dead
connection, a consumer gone) ends the session: what was read and not committed is dropped, and
the next session starts again from the lake — however the consumers were left.

While one commit runs (in a thread, so the loop keeps pulling), the next batches fill; when those
are full too the loop stops pulling and the stream holds the backlog. After every output has
committed, partitions with interest retention (`$MQTT_msgs`) are acknowledged up to what all of
them hold: acks release retained messages, they never decide what is read next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from nats.errors import Error as NatsError

from sensorlake import faults
from sensorlake.config import Config
from sensorlake.errors import LakeError, StreamError
from sensorlake.faults import Faults
from sensorlake.lake.outputs import combine
from sensorlake.lake.records import Decoder
from sensorlake.metrics import WriterMetrics
from sensorlake.pipeline.commit import Committer, is_transient
from sensorlake.pipeline.output import Output, RejectSink
from sensorlake.stream.connection import StreamClient
from sensorlake.stream.feed import Drained, PullFeed
from sensorlake.stream.partitions import Partition, Position

log = logging.getLogger(__name__)

FETCH_BATCH = 10_000
FETCH_TIMEOUT = 0.2
"""How long the loop waits for a delivery before it looks at its commits again."""
COALESCE = 1000
COALESCE_S = 0.01
"""Under load, deliveries trickle in a few at a time; waiting this long for more when fewer than
COALESCE are there makes batches of hundreds (decoding a batch has a fixed cost), while a lone
reading is still decoded within milliseconds."""
PULL_EXPIRES = 30.0
"""How long a pull request stays open. An expiry answers with a status message, which, for the
devices' account, a capture of any topic stores in the stream: idle pulls stay rare."""
_SESSION_ERRORS = (StreamError, NatsError, TimeoutError, OSError, LakeError)


@dataclass
class _Window:
    """What was read since the last commit began."""

    rows: int = 0
    nbytes: int = 0
    messages: int = 0
    started: float = 0.0
    through: Position = field(default_factory=Position)
    acks: dict[str, tuple[int, str]] | None = None


BEHIND_HOLD = 6
"""While the worker is behind the stream, a rule table is held up to this many times
`lake.rule_flush_interval` (or until its readings take `lake.flush_bytes`): each commit of a table
costs about the same whatever its size, so with 50 rules, committing every table every few
windows cost more than the readings (`benchmarks/rules.py`)."""


@dataclass
class _Held:
    """An output's sealed rows of several windows, waiting to be committed together."""

    rows: list[pa.Table] = field(default_factory=list)
    nbytes: int = 0
    """What the held readings take in memory (windows share their buffers with telemetry's,
    so this counts them once per output: a bound, not a sum over outputs)."""
    since: float = 0.0
    through: Position = field(default_factory=Position)
    """Every held window's position, merged: the windows may cover different partitions, and
    the commit must record them all, or a restart would read the rows' messages again."""

    def take(self, rows: pa.Table | None, through: Position) -> bool:
        """Add a window's rows; whether any are held now."""
        if rows is not None and rows.num_rows:
            if not self.rows:
                self.since = time.monotonic()
            self.rows.append(rows)
            self.nbytes += rows.nbytes
        if self.rows:
            self.through = self.through.merged(through)
        return bool(self.rows)

    def due(self, hold_s: float, max_bytes: int) -> bool:
        return self.nbytes >= max_bytes or time.monotonic() - self.since >= hold_s

    def release(self, through: Position) -> tuple[pa.Table | None, Position]:
        """The held rows, and the position they and this window bring the output to."""
        rows, reach = combine(self.rows), self.through.merged(through)
        self.rows, self.nbytes, self.through = [], 0, Position()
        return rows, reach


class Worker:
    def __init__(
        self,
        config: Config,
        client: StreamClient,
        outputs: Sequence[Output],
        rejects: RejectSink,
        decoder: Callable[[], Decoder],
        metrics: WriterMetrics | None = None,
        fault_points: Faults = faults.NO_FAULTS,
    ) -> None:
        self._config = config
        self._client = client
        self._outputs = list(outputs)
        self._rejects = rejects
        self._new_decoder = decoder
        self._metrics = metrics or WriterMetrics()
        self._faults = fault_points
        self._committer = Committer(self._metrics, idle_s=max(30.0, config.lake.flush_interval))
        for output in self._outputs:  # shown from the start, not from the first row
            self._metrics.committed.labels(output.name)
        for kind in ("transient", "terminal"):
            self._metrics.commit_failures.labels(kind)
        self._committed: dict[str, Position] = {o.name: Position() for o in self._outputs}
        self._held: dict[str, _Held] = {}
        """Rows of outputs that commit less often than every window (rule tables)."""
        self._unneeded: dict[str, Position] = {o.name: Position() for o in self._outputs}
        """Per output, what it had nothing to store from (since the session began)."""
        self._partitions: list[Partition] = []
        self._feeds: dict[str, PullFeed] = {}
        self._window = _Window()
        self._commit_task: asyncio.Task[None] | None = None
        self._unacked: dict[str, list[tuple[int, str]]] = {}
        self._progress_at = time.monotonic()
        self.decoder: Decoder | None = None
        self.ready = asyncio.Event()
        self.rule_counters: Callable[[], dict[str, dict[str, Any]]] = dict
        """What each running rule counted (matched, emitted, errors), for `/api/v1/rules`."""
        self.deliveries: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = []
        """Loops that send side effects (rule actions) while the worker runs."""

    # -- what /healthz and the supervisor of `up` see -------------------------------------------

    def status(self) -> dict[str, Any]:
        failing = [(h.since or 0.0, h.reason) for h in self._committer.health.values() if h.reason]
        busy = self._window.messages > 0 or self._committing
        return {
            "ready": self.ready.is_set(),
            "committed": {name: dict(p.seqs) for name, p in self._committed.items()},
            "progress_age_s": 0.0 if not busy else round(time.monotonic() - self._progress_at, 3),
            "degraded": ({"reason": min(failing)[1], "since": min(failing)[0]}
                         if failing else None),
            "rules": self.rule_counters(),
        }

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.1
        while not stop.is_set():
            try:
                await self._session(stop)
                return
            except _SESSION_ERRORS as exc:
                if not isinstance(exc, LakeError | StreamError) and not is_transient(exc):
                    raise
                self.ready.clear()
                self._metrics.session_restarts.inc()
                log.warning("pipeline session ended (%s); starting over from what the lake "
                            "holds", exc)
                await self._abandon()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 5.0)

    async def _session(self, stop: asyncio.Event) -> None:
        self._partitions = await self._client.partitions()
        positions = await asyncio.to_thread(self._load_positions)
        self._committed = {name: p.for_partitions(self._partitions)
                           for name, p in positions.items()}
        self._unneeded = {name: Position() for name in positions}
        self.decoder = self._new_decoder()
        wake = asyncio.Event()
        for partition in self._partitions:
            start = min(p.seq(partition) for p in self._committed.values()) + 1
            self._feeds[partition.name] = await self._client.open_feed(partition, start, wake)
            log.info("reading %s from seq %s", partition.name, start)
        self._window = _Window(started=time.monotonic())
        self._progress_at = time.monotonic()
        reconnects = self._client.reconnects
        self.ready.set()
        max_bytes = max(1024 * 1024, min(self._config.lake.flush_bytes // 4, 16 * 1024 * 1024))
        while not stop.is_set():
            if self._client.reconnects != reconnects:
                raise StreamError("the connection to NATS was lost and restored")
            if self._full() and self._commit_task is not None:
                await self._commit_task  # backpressure: stop pulling, the stream holds the rest
            if self._due():
                self._start_commit(force=False)
            for feed in self._feeds.values():
                await feed.request(FETCH_BATCH, max_bytes, PULL_EXPIRES)
            if not any(feed.has_data for feed in self._feeds.values()):
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), FETCH_TIMEOUT)
            if 0 < sum(feed.waiting for feed in self._feeds.values()) < COALESCE:
                await asyncio.sleep(COALESCE_S)  # a few more: decoding costs less per batch
            self._take([(p, self._feeds[p.name].drain()) for p in self._partitions])
        self._start_commit(force=True)
        await self._wait_commit()
        self._committer.stopping.set()
        await self._close_feeds()

    def _load_positions(self) -> dict[str, Position]:
        return {output.name: output.load_position() for output in self._outputs}

    def _take(self, parts: list[tuple[Partition, Drained]]) -> None:
        delivered = sum(drained.delivered for _, drained in parts)
        if not delivered:
            if self._window.messages == 0 and not self._committing:
                self._progress_at = time.monotonic()  # idle and caught up
            return
        assert self.decoder is not None
        batch = self.decoder.decode(parts)
        window = self._window
        if window.messages == 0:
            window.started = time.monotonic()
        window.messages += delivered
        window.rows += len(batch) + batch.dead.num_rows
        window.nbytes += batch.nbytes
        window.through = window.through.merged(batch.through)
        for partition, drained in parts:
            if partition.acked and drained.deliveries:
                last = drained.deliveries[-1]  # every delivery of $MQTT_msgs is kept
                window.acks = window.acks or {}
                window.acks[partition.name] = (last.seq, last.reply)
        for output in self._outputs:
            output.add(batch)
        self._metrics.received.inc(len(batch))
        self._metrics.buffered.set(window.rows)

    @property
    def _committing(self) -> bool:
        return self._commit_task is not None and not self._commit_task.done()

    def _full(self, window: _Window | None = None) -> bool:
        """Whether `window` (by default the open one) is cut by size: more waits in the stream."""
        window = window or self._window
        lake = self._config.lake
        return window.rows >= lake.flush_rows or window.nbytes >= lake.flush_bytes

    def _asks(self) -> bool:
        """Whether an output holds rows that no message brought (silence detections)."""
        return any(getattr(output, "asks_commit", False) for output in self._outputs)

    def _due(self) -> bool:
        if self._committing:
            return False
        if self._window.messages == 0:
            return self._asks()
        age = time.monotonic() - self._window.started
        return self._full() or age >= self._config.lake.flush_interval

    # -- commits -----------------------------------------------------------------------------

    def _start_commit(self, *, force: bool) -> None:
        if self._committing:
            return
        if self._commit_task is not None:
            self._commit_task.result()  # a failed commit ends the session (raised here)
            self._commit_task = None
        window, self._window = self._window, _Window(started=time.monotonic())
        if window.messages == 0 and not force and not self._asks():
            return
        sealed = {output.name: output.seal() for output in self._outputs}
        for name, ack in (window.acks or {}).items():
            self._unacked.setdefault(name, []).append(ack)
        self._commit_task = asyncio.create_task(
            self._commit(sealed, window.through, force, time.monotonic() - window.started,
                         behind=self._full(window)), name="lake-commit")

    async def _commit(self, sealed: dict[str, pa.Table | None], through: Position,
                      force: bool, window_s: float = 0.0, behind: bool = False) -> None:
        started = time.perf_counter()
        rows = await asyncio.to_thread(self._commit_all, sealed, through, force, window_s,
                                       behind)
        self._faults.hit(faults.AFTER_COMMIT)
        await self._ack()
        seconds = time.perf_counter() - started
        self._progress_at = time.monotonic()
        self._metrics.flush_duration.observe(seconds)
        self._metrics.buffered.set(self._window.rows)
        if rows:
            self._metrics.commits.inc()
            self._metrics.last_commit.set_to_current_time()
            log.info("committed %s rows up to %s in %.3f s", rows, through.encode(), seconds)
        await self._update_lag()

    def _commit_all(self, sealed: dict[str, pa.Table | None], through: Position, force: bool,
                    window_s: float = 0.0, behind: bool = False) -> int:
        """In the commit thread: every output in turn (dead_letter first). An output with
        nothing to store for this window writes its position now and then only; until then it
        is known to need nothing up to `through` (`_unneeded`), which is all acks must know."""
        total = 0
        for output in self._outputs:
            rows = sealed[output.name]
            hold = output.hold_s
            reach = through
            if hold:  # a rule table: committed every hold_s seconds, not with every window
                held = self._held.setdefault(output.name, _Held())
                # Held only while windows come faster than hold_s (under load): an idle
                # window is already that long, and holding it would double the latency. While
                # the stream has a backlog (windows cut by size), longer: the readings wait
                # there anyway, and fewer, larger commits clear it sooner.
                wait = hold * BEHIND_HOLD if behind else hold
                if held.take(rows, through) and not force and window_s < wait and not held.due(
                        wait, self._config.lake.flush_bytes):
                    continue  # kept in memory; its position stays, so acks wait for it
                rows, reach = held.release(through)
            before = self._committed[output.name]
            self._committed[output.name] = self._committer.commit(
                output, rows, reach, before, self._rejects, force=force)
            if rows is None or not rows.num_rows:
                self._unneeded[output.name] = self._unneeded[output.name].merged(reach)
            if rows is not None:
                total += rows.num_rows
                self._metrics.committed.labels(output.name).inc(rows.num_rows)
            if output is not self._outputs[-1]:
                self._faults.hit(faults.BETWEEN_OUTPUTS)
        return total

    async def _ack(self) -> None:
        """Acknowledge, on partitions that retain until acked, what every output holds."""
        for partition in self._partitions:
            pending = self._unacked.get(partition.name)
            if not partition.acked or not pending:
                continue
            # A message is released once every output holds it or had nothing to store from
            # it: a restart then skips it, which loses nothing.
            floor = min(max(self._committed[name].seq(partition),
                            self._unneeded[name].seq(partition)) for name in self._committed)
            done = [ack for ack in pending if ack[0] <= floor]
            if not done:
                continue
            self._unacked[partition.name] = [ack for ack in pending if ack[0] > floor]
            try:
                await self._client.ack(partition, done[-1][1])
            except (NatsError, StreamError) as exc:
                # Harmless: the next session's consumer starts after what the lake holds.
                log.warning("ack of %s seq %s failed: %s", partition.name, done[-1][0], exc)

    async def _wait_commit(self) -> None:
        if self._commit_task is not None:
            task, self._commit_task = self._commit_task, None
            await task

    async def _update_lag(self) -> None:
        lag = 0
        for partition in self._partitions:
            feed = self._feeds.get(partition.name)
            if feed is None:
                continue
            with contextlib.suppress(NatsError, StreamError, TimeoutError):
                lag += await self._client.pending(partition, feed.consumer)
        self._metrics.consumer_lag.set(lag + self._window.messages)

    async def _abandon(self) -> None:
        """After a failed session: let a running commit finish (its rows are whole), then drop
        what was read since and the feeds."""
        if self._commit_task is not None:
            with contextlib.suppress(Exception):
                await self._commit_task
            self._commit_task = None
        for output in self._outputs:
            output.discard()
        self._held.clear()
        self._window = _Window(started=time.monotonic())
        self._unacked.clear()
        await self._close_feeds()

    async def _close_feeds(self) -> None:
        for partition in self._partitions:
            feed = self._feeds.pop(partition.name, None)
            if feed is not None:
                with contextlib.suppress(NatsError, StreamError, OSError):
                    await self._client.close_feed(partition, feed)
