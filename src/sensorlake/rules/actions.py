"""A rule's side-effect actions — `republish` (MQTT) and `http` (POST a JSON array) — as outputs
of the pipeline's contract, sent through the durable outbox (`pipeline/outbox.py`).

The output takes the readings the rule matches and hands them at once to its delivery loop,
which evaluates the rule over them in a thread and sends the rows in order: a republish takes
milliseconds, not a flush interval. A commit stores what is not delivered yet, with the output's
position, so a slow or dead receiver never holds up the pipeline: its rows wait in the outbox
(up to `MAX_WAITING`, then the oldest are dropped and counted), and the stream lets their
messages go. A receiver that answers 4xx (other than 408 and 429) refuses the rows for good:
after a few tries they are counted as undeliverable and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Protocol

import httpx
import orjson
import pyarrow as pa

from sensorlake import faults
from sensorlake.errors import SensorlakeError
from sensorlake.faults import Faults
from sensorlake.lake.outputs import combine
from sensorlake.lake.records import DecodedBatch, after
from sensorlake.lake.tables import STREAM_FIELD
from sensorlake.pipeline.outbox import Effect, Outbox
from sensorlake.rules.evaluate import CompiledRule, Evaluator, RuleFailed
from sensorlake.rules.republish import render
from sensorlake.stream.connection import StreamClient
from sensorlake.stream.partitions import Position
from sensorlake.stream.subjects import subject_for_topic

log = logging.getLogger(__name__)

MAX_WAITING = 100_000
"""Rows an action holds while its receiver is down, in memory and in the outbox alike."""
REFUSED_TRIES = 3
"""Tries of a batch a receiver refuses (HTTP 4xx) before it is counted undeliverable."""
MAX_BACKOFF_S = 60.0


class DeliveryFailed(SensorlakeError):
    def __init__(self, message: str, *, refused: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.refused = refused
        self.retry_after = retry_after


class Target(Protocol):
    kind: str
    batch: int
    """Rows per send (whole messages are never split)."""

    async def send(self, rule: str, effects: list[Effect]) -> None:
        """Deliver `effects` or raise DeliveryFailed."""
        ...

    async def close(self) -> None:
        ...


class HttpTarget:
    """POSTs a JSON array of result rows, as AWS IoT's HTTP action and a Lambda receive them."""

    kind = "http"
    batch = 500

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self._timeout = timeout_s
        self._client: httpx.AsyncClient | None = None

    async def send(self, rule: str, effects: list[Effect]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        first, last = effects[0], effects[-1]
        body = b"[" + b",".join(e.body for e in effects) + b"]"
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "sensorlake",
            # The same rows always carry the same key: a receiver deduplicates by it.
            "Idempotency-Key": f"{rule}:{first.stream}:{first.seq}.{first.idx}-"
                               f"{last.seq}.{last.idx}",
        }
        try:
            reply = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"POST {self.url}: {type(exc).__name__}: {exc}") from exc
        if reply.status_code < 300:
            return
        refused = 400 <= reply.status_code < 500 and reply.status_code not in (408, 425, 429)
        retry_after = None
        with contextlib.suppress(ValueError):
            retry_after = min(float(reply.headers.get("Retry-After", "")), 300.0)
        raise DeliveryFailed(f"POST {self.url}: HTTP {reply.status_code} "
                             f"{reply.text[:200]!r}", refused=refused, retry_after=retry_after)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class RepublishTarget:
    """Publishes each row as JSON where MQTT clients subscribe."""

    kind = "republish"
    batch = 1000

    def __init__(self, client: StreamClient) -> None:
        self._client = client

    async def send(self, rule: str, effects: list[Effect]) -> None:
        try:
            await self._client.publish_to_devices([(e.topic, e.body) for e in effects])
        except SensorlakeError as exc:
            raise DeliveryFailed(str(exc)) from exc

    async def close(self) -> None:
        """The stream client is the worker's: closed with it."""


class ActionOutput:
    hold_s = 0.0

    def __init__(self, rule: CompiledRule, evaluator: Evaluator, target: Target, outbox: Outbox,
                 start_at: Callable[[], Position], *, counts: bool = False,
                 fault_points: Faults = faults.NO_FAULTS) -> None:
        self.rule = rule
        self.name = f"{rule.name}.{target.kind}"
        self.target = target
        self._evaluator = evaluator
        self._outbox = outbox
        self._start_at = start_at
        self._counts = counts
        """This output counts the rule's matches (it has no table or state to)."""
        self._faults = fault_points
        self._lock = threading.Lock()
        self._delivered = Position()
        self._floor = Position()
        """What a restart skips: what the outbox holds or was delivered."""
        self._identities: dict[str, str] = {}
        self._pending: list[pa.Table] = []
        self._queue: deque[pa.Table | list[Effect]] = deque()
        self._waiting = 0
        self._restored: list[Effect] | None = None
        self._reload = True
        self._wake = asyncio.Event()

    # -- the output contract (add and discard on the event loop, the rest in threads) --------

    def load_position(self) -> Position:
        through, delivered, pending = self._outbox.load(self.name)
        if through is None:  # never written: start where telemetry is
            through = self._start_at()
            self._outbox.commit(self.name, [], through, delivered, MAX_WAITING)
        with self._lock:
            self._delivered = self._delivered.merged(delivered)
            self._floor = through.merged(self._delivered)
            self._identities.update({**through.identities, **delivered.identities})
            if self._reload:  # a new session: what waits in the outbox is sent first
                self._restored, self._reload = pending, False
        return through

    def add(self, batch: DecodedBatch) -> None:
        rows = self._evaluator.matching(self.rule, batch.readings)
        if not rows.num_rows:
            return
        self._identities.update(batch.through.identities)
        with self._lock:
            rows = after(rows, self._floor)
        if not rows.num_rows:
            return
        self._pending.append(rows)
        self._queue.append(rows)
        self._waiting += rows.num_rows
        while self._waiting > MAX_WAITING and len(self._queue) > 1:
            self._drop(self._queue.popleft())
        self._wake.set()

    def seal(self) -> pa.Table | None:
        pending, self._pending = self._pending, []
        return combine(pending)

    def discard(self) -> None:
        self._pending = []
        self._queue.clear()
        self._waiting = 0
        self._reload = True

    def write(self, rows: pa.Table | None, through: Position) -> None:
        self._faults.hit(faults.BEFORE_COMMIT)
        with self._lock:
            delivered = self._delivered
        todo = after(rows, delivered) if rows is not None else None
        effects = self.effects(todo) if todo is not None and todo.num_rows else []
        dropped = self._outbox.commit(self.name, effects, through, delivered, MAX_WAITING,
                                      before_commit=lambda: self._faults.hit(faults.BEFORE_SWAP))
        if dropped:
            self._note_dropped(dropped)
        if self._counts and rows is not None:
            self.rule.counters.matched += rows.num_rows
            self.rule.counters.emitted += len(effects)

    def note_rejected(self, readings: int, error: str) -> None:
        if self._counts:
            self.rule.counters.matched += readings
            self.rule.counters.errors += readings
            self.rule.counters.last_error = error

    # -- evaluation ---------------------------------------------------------------------------

    def effects(self, readings: pa.Table) -> list[Effect]:
        """The rule's rows over `readings`, as what this action sends; RuleFailed when the rule
        cannot be evaluated over them."""
        result = self._evaluator.evaluate(self.rule, readings)
        if not result.num_rows:
            return []
        added = set(self.rule.added(readings.schema))
        keys = readings.select([STREAM_FIELD, "seq", "topic", "device_id"]).to_pylist()
        origin = {(k[STREAM_FIELD], k["seq"]): (k["topic"], k["device_id"]) for k in keys}
        template = self.rule.config.republish
        value = self.rule.translated.value
        seen: dict[tuple[str, int], int] = {}
        out: list[Effect] = []
        for row in result.to_pylist():
            key = (row[STREAM_FIELD], row["seq"])
            idx = seen[key] = seen.get(key, -1) + 1
            topic, device = origin.get(key, ("", None))
            shown = {k: v for k, v in row.items() if k not in added and v is not None}
            body = orjson.dumps(row.get("value") if value else shown, default=str,
                                option=orjson.OPT_NON_STR_KEYS)
            if template is not None and self.target.kind == "republish":
                topic = render(template, topic, device, shown)
                try:
                    subject_for_topic("", topic)
                except SensorlakeError as exc:
                    self.rule.counters.undeliverable += 1
                    self.rule.counters.last_delivery_error = str(exc)
                    continue
            out.append(Effect(key[0], key[1], idx, topic, body))
        return out

    def _lenient(self, readings: pa.Table) -> list[Effect]:
        """For sending: a message the rule fails on is left out (the commit sets it apart into
        dead_letter, with the error); the others go."""
        try:
            return self.effects(readings)
        except RuleFailed:
            pass
        out: list[Effect] = []
        for part in _messages(readings):
            with contextlib.suppress(RuleFailed):
                out += self.effects(part)
        return out

    # -- delivery -----------------------------------------------------------------------------

    async def deliver(self, stop: asyncio.Event) -> None:
        """Send what the rule emits, in order, for as long as the worker runs."""
        try:
            while not stop.is_set():
                with self._lock:
                    restored, self._restored = self._restored, None
                if restored:
                    self._queue.appendleft(restored)
                    self._waiting += len(restored)
                if not self._queue:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 1.0)
                    continue
                item = self._queue[0]
                if not await self._deliver(item, stop):
                    return
                if self._queue and self._queue[0] is item:
                    self._queue.popleft()
                    self._waiting -= _size(item)
        finally:
            await self.target.close()

    async def _deliver(self, item: pa.Table | list[Effect], stop: asyncio.Event) -> bool:
        with self._lock:
            delivered = self._delivered
        if isinstance(item, list):
            effects = [e for e in item if delivered.seqs.get(e.stream, 0) < e.seq]
        else:
            todo = after(item, delivered)
            effects = await asyncio.to_thread(self._lenient, todo) if todo.num_rows else []
        for chunk in _chunks(effects, self.target.batch):
            if not await self._send(chunk, stop):
                return False
            reach = Position({e.stream: e.seq for e in chunk},
                             {e.stream: self._identities.get(e.stream, "") for e in chunk})
            with self._lock:
                self._delivered = delivered = self._delivered.merged(reach)
            try:
                await asyncio.to_thread(self._outbox.delivered, self.name, delivered)
            except Exception as exc:  # the database is away: a restart may send these again
                log.warning("%s: cannot record what was delivered: %s", self.name, exc)
        return True

    async def _send(self, chunk: list[Effect], stop: asyncio.Event) -> bool:
        delay, refusals = 0.5, 0
        while not stop.is_set():
            try:
                await self.target.send(self.rule.name, chunk)
            except DeliveryFailed as exc:
                self.rule.counters.last_delivery_error = str(exc)
                if exc.refused:
                    refusals += 1
                    if refusals >= REFUSED_TRIES:
                        log.error("%s: %s rows refused for good: %s", self.name, len(chunk), exc)
                        self.rule.counters.undeliverable += len(chunk)
                        return True
                log.warning("%s: delivery failed, retrying: %s", self.name, exc)
                wait = exc.retry_after if exc.retry_after is not None else (
                    delay * (0.5 + random.random()))  # noqa: S311 (jitter)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            self.rule.counters.delivered += len(chunk)
            return True
        return False

    def _drop(self, item: pa.Table | list[Effect]) -> None:
        size = _size(item)
        self._waiting -= size
        self._note_dropped(size)

    def _note_dropped(self, rows: int) -> None:
        self.rule.counters.undeliverable += rows
        log.error("%s: the receiver has been failing for long; %s waiting rows dropped",
                  self.name, rows)


def _size(item: pa.Table | list[Effect]) -> int:
    return len(item) if isinstance(item, list) else int(item.num_rows)


def _chunks(effects: list[Effect], size: int) -> Iterator[list[Effect]]:
    """Runs of about `size` effects that never split one message's rows."""
    start = 0
    while start < len(effects):
        end = min(start + size, len(effects))
        while end < len(effects) and effects[end][:2] == effects[end - 1][:2]:
            end += 1
        yield effects[start:end]
        start = end


def _messages(readings: pa.Table) -> Iterator[pa.Table]:
    streams = readings[STREAM_FIELD].to_pylist()
    seqs = readings["seq"].to_pylist()
    start = 0
    for i in range(1, len(seqs) + 1):
        if i == len(seqs) or (streams[i], seqs[i]) != (streams[start], seqs[start]):
            yield readings.slice(start, i - start)
            start = i
