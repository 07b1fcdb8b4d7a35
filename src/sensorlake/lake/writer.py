"""The lake writer: stream → Iceberg, exactly once.

It pulls from a durable consumer, buffers until `flush_interval`, `flush_rows` or `flush_bytes`,
and commits one snapshot per table with the highest stream sequence it contains recorded in the
snapshot summary. Only after the commit does it ack the stream (AckAll on the last message), so a
crash anywhere leaves either "committed and acked", or "committed, not acked" — redelivered
messages at or below the committed sequence are skipped — or "neither", and nothing is written
twice or lost.

While one buffer commits (in a thread, so the event loop keeps pulling), the next one fills; a
third is never started: when both are full the writer stops pulling and the stream holds the
backlog. Queries see uncommitted readings by reading the stream past the committed sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass

import pyarrow as pa
from nats.errors import Error as NatsError
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from sensorlake.config import Config
from sensorlake.errors import SensorlakeError
from sensorlake.ingest.identity import IdentityRules
from sensorlake.lake.records import (
    Batch,
    DeadLetters,
    Decoder,
    batch_to_arrow,
    conflicts_to_dead,
    evolve_schema,
)
from sensorlake.lake.tables import (
    DEAD_LETTER,
    SEQ_PROPERTY,
    STREAM_PROPERTY,
    TELEMETRY,
    committed_seq,
    ensure_tables,
)
from sensorlake.metrics import WriterMetrics
from sensorlake.stream.connection import StreamClient
from sensorlake.stream.feed import Delivery

log = logging.getLogger(__name__)

FETCH_BATCH = 10_000
FETCH_TIMEOUT = 0.2
FAULT_ENV = "SENSORLAKE_FAULT"
"""Fault injection for the crash tests: `kill-after-commit` makes the process kill -9 itself
between the Iceberg commit and the stream ack — the one moment exactly-once is hardest."""


@dataclass(frozen=True)
class CommitResult:
    rows: int
    dead: int
    last_seq: int
    seconds: float


class LakeWriter:
    def __init__(
        self,
        config: Config,
        client: StreamClient,
        catalog: Catalog,
        metrics: WriterMetrics | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._catalog = catalog
        self._metrics = metrics or WriterMetrics()
        self._decoder = Decoder(
            IdentityRules(config.ingest.device_id_from), config.stream.subject_prefix
        )
        self._tables: dict[str, Table] = {}
        self._committed: dict[str, int] = {TELEMETRY: 0, DEAD_LETTER: 0}
        self._stream_identity = ""
        self._buffer = Batch()
        self._buffer_started = time.monotonic()
        self._last_msg: Delivery | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._seen_seq = 0
        self.ready = asyncio.Event()

    @property
    def committed(self) -> dict[str, int]:
        return dict(self._committed)

    async def run(self, stop: asyncio.Event) -> None:
        position = await self._client.ensure_stream()
        self._stream_identity = position.identity
        self._tables = await asyncio.to_thread(
            ensure_tables, self._catalog, self._config.lake.namespace
        )
        for name, table in self._tables.items():
            self._committed[name] = committed_seq(table, self._stream_identity)
        self._seen_seq = self._committed[TELEMETRY]
        ack_wait = max(60.0, self._config.lake.flush_interval * 6)
        feed = await self._client.writer_feed(ack_wait)
        max_bytes = max(1024 * 1024, min(self._config.lake.flush_bytes // 4, 16 * 1024 * 1024))
        log.info(
            "lake writer resuming after seq %s (dead letters after %s)",
            self._committed[TELEMETRY], self._committed[DEAD_LETTER],
        )
        self.ready.set()
        backoff = 0.1
        while not stop.is_set():
            if self._full() and self._commit_task is not None:
                await self._commit_task  # backpressure: stop pulling, the stream holds the rest
            if self._due():
                await self._start_commit()
            try:
                msgs = await feed.fetch(FETCH_BATCH, max_bytes, FETCH_TIMEOUT)
            except (NatsError, OSError) as exc:
                log.warning("fetch from the stream failed (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            self._add(msgs)
        await feed.stop()
        await self._start_commit()
        if self._commit_task is not None:
            await self._commit_task
        await self._update_lag()

    def _add(self, msgs: list[Delivery]) -> None:
        before = len(self._buffer)
        for msg in msgs:
            seq = msg.seq
            if seq <= self._seen_seq:
                continue  # redelivered while its commit was in flight, or committed before a crash
            self._seen_seq = seq
            self._last_msg = msg
            if not self._buffer.messages:
                self._buffer_started = time.monotonic()
            self._decoder.add_delivery(self._buffer, msg)
        self._metrics.received.inc(len(self._buffer) - before)
        self._metrics.buffered.set(len(self._buffer))

    def _full(self) -> bool:
        lake = self._config.lake
        return len(self._buffer) >= lake.flush_rows or self._buffer.nbytes >= lake.flush_bytes

    def _due(self) -> bool:
        if self._last_msg is None:
            return False
        if self._commit_task is not None and not self._commit_task.done():
            return False
        age = time.monotonic() - self._buffer_started
        return self._full() or age >= self._config.lake.flush_interval

    async def _start_commit(self) -> None:
        if self._commit_task is not None:
            await self._commit_task
            self._commit_task = None
        last_msg = self._last_msg
        if last_msg is None:
            return
        batch, self._buffer = self._buffer, Batch()
        self._buffer_started = time.monotonic()
        self._last_msg = None
        self._commit_task = asyncio.create_task(
            self._commit_and_ack(batch, last_msg), name="lake-commit"
        )

    async def _commit_and_ack(self, batch: Batch, last_msg: Delivery) -> None:
        last_seq = last_msg.seq
        delay = 0.5
        while True:
            try:
                result = await asyncio.to_thread(self._commit, batch, last_seq)
                break
            except Exception as exc:  # the lake must never lose a batch: retry, never drop
                self._metrics.commit_failures.inc()
                log.error("commit of seq %s..%s failed: %s; retrying", batch.first_seq,
                          last_seq, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        if result.rows and os.environ.get(FAULT_ENV) == "kill-after-commit":
            marker = self._config.data_dir / "fault-kill-after-commit.fired"
            if not marker.exists():  # once per data dir, so the restarted writer can finish
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        try:
            await self._client.ack_through(last_msg.reply)
        except (NatsError, SensorlakeError, TimeoutError) as exc:
            # Harmless: the redelivered messages are at or below the committed sequence.
            log.warning("ack of seq %s failed (%s); it will be redelivered and skipped",
                        last_seq, exc)
        self._metrics.committed.inc(result.rows)
        self._metrics.dead_lettered.inc(result.dead)
        self._metrics.flush_duration.observe(result.seconds)
        self._metrics.buffered.set(len(self._buffer))
        if result.rows or result.dead:
            self._metrics.commits.inc()
            log.info("committed %s readings, %s dead letters up to seq %s in %.3f s",
                     result.rows, result.dead, last_seq, result.seconds)
        await self._update_lag()

    async def _update_lag(self) -> None:
        with contextlib.suppress(NatsError, SensorlakeError, TimeoutError):
            self._metrics.consumer_lag.set(await self._client.consumer_pending())

    def _commit(self, batch: Batch, last_seq: int) -> CommitResult:
        """Runs in a thread: dead letters first, then telemetry — so a committed telemetry
        position implies that batch's dead letters are committed too."""
        started = time.perf_counter()
        telemetry = self._tables[TELEMETRY]
        dead = DeadLetters()
        for i in range(len(batch.dead)):
            if batch.dead.seqs[i] > self._committed[DEAD_LETTER]:
                dead.add(batch.dead.topics[i], batch.dead.device_ids[i], batch.dead.seqs[i],
                         batch.dead.received_us[i], batch.dead.reasons[i], batch.dead.raws[i])
        table = pa.table({})
        if len(batch):
            schema = telemetry.schema().as_arrow()
            evolved = evolve_schema(batch, schema)
            if evolved is not schema:
                with telemetry.update_schema() as update:
                    update.union_by_name(evolved)
                schema = telemetry.schema().as_arrow()
            table, conflicts = batch_to_arrow(batch, schema)
            conflicts_to_dead(batch, conflicts, dead)
        properties = {SEQ_PROPERTY: str(last_seq), STREAM_PROPERTY: self._stream_identity}
        if len(dead):
            self._tables[DEAD_LETTER].append(dead.to_arrow(), snapshot_properties=properties)
            self._committed[DEAD_LETTER] = last_seq
        if table.num_rows:
            telemetry.append(table, snapshot_properties=properties)
            self._committed[TELEMETRY] = last_seq
        return CommitResult(table.num_rows, len(dead), last_seq, time.perf_counter() - started)
