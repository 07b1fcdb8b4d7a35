"""The agent's loop: take a sample on schedule, queue it, hand the oldest queued readings to
MQTT while connected, forget them once acknowledged.

Everything happens on one thread, which owns the queue; it sleeps on the link's event queue
until the next sample is due or something arrives (a PUBACK, a connect, a signal), so an idle
agent costs nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from sensorlake.agent.link import Acked, Connected, Disconnected, Link, Refused, Wake
from sensorlake.agent.queue import ReadingQueue
from sensorlake.agent.sources import Source, SourceFailed
from sensorlake.errors import AgentError

log = logging.getLogger(__name__)

DROP_LOG_EVERY_S = 30.0


@dataclass(frozen=True)
class Schedule:
    """When to sample and when to give up."""

    interval: float = 10.0
    count: int | None = None
    """Samples to take, then drain and stop; None runs until stopped, 0 only drains."""
    drain_timeout: float | None = 30.0
    """With `count`: seconds to wait for the queue to empty after the last sample."""
    window: int = 100
    """Readings handed to MQTT and not yet acknowledged, at most."""

    def __post_init__(self) -> None:
        if not 0 < self.interval <= 86_400:
            raise AgentError(f"--interval must be more than 0 and at most 86400 s, "
                             f"not {self.interval}")
        if self.count is not None and self.count < 0:
            raise AgentError(f"--count must be 0 or more, not {self.count}",
                             hint="0 sends what is queued and stops")
        if self.drain_timeout is not None and self.drain_timeout < 0:
            raise AgentError(f"--drain-timeout must be 0 or more, not {self.drain_timeout}")
        if not 1 <= self.window <= 1000:
            raise AgentError(f"the in-flight window must be 1 to 1000, not {self.window}")


@dataclass
class Stats:
    samples: int = 0
    taken: int = 0
    """Readings stored in the queue this run."""
    failed: int = 0
    """Samples the source could not take."""
    published: int = 0
    """Readings the broker acknowledged this run."""
    dropped: int = 0
    """Readings dropped this run because the queue was full."""
    queued: int = 0
    dropped_total: int = 0
    """Dropped over the queue's whole life (kept in the queue file)."""
    connected: bool = False
    outages: int = 0
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        text = (f"{self.taken:,} readings taken, {self.published:,} published, "
                f"{self.queued:,} queued, {self.dropped:,} dropped")
        if self.dropped_total != self.dropped:
            text += f" ({self.dropped_total:,} dropped in all)"
        if self.failed:
            text += f"; {self.failed:,} samples failed"
        return text


class Agent:
    def __init__(self, source: Source, store: ReadingQueue, link: Link, topic: str,
                 schedule: Schedule, on_status: Callable[[Stats], None] | None = None) -> None:
        self._source = source
        self._store = store
        self._link = link
        self._topic = topic
        self._schedule = schedule
        self._on_status = on_status
        self.stats = Stats(queued=len(store), dropped_total=store.dropped)
        self._handed: dict[int, int] = {}  # paho mid → queue id, awaiting PUBACK
        self._last_handed = 0  # highest queue id handed to paho this run
        self._resending = False  # paho re-sends what it holds; hand nothing new until then
        self._stopping = False
        self._ever_connected = False
        self._last_drop_log = -DROP_LOG_EVERY_S
        self._warned_unreachable = False
        self._last_report = 0.0

    def request_stop(self) -> None:
        """Safe from a signal handler: sets a flag and wakes the loop."""
        self._stopping = True
        self._link.events.put(Wake())

    def run(self) -> Stats:
        schedule = self._schedule
        self._link.start()
        try:
            next_due = time.monotonic()
            sampling_done_at: float | None = time.monotonic() if schedule.count == 0 else None
            while not self._stopping:
                now = time.monotonic()
                if sampling_done_at is None and now >= next_due:
                    self._sample()
                    next_due = max(next_due + schedule.interval, now)
                    if schedule.count is not None and self.stats.samples >= schedule.count:
                        sampling_done_at = now
                if sampling_done_at is not None:
                    if not self._handed and len(self._store) == 0:
                        break
                    if (schedule.drain_timeout is not None
                            and now - sampling_done_at >= schedule.drain_timeout):
                        log.warning("the broker did not take every reading within %g s",
                                    schedule.drain_timeout)
                        break
                self._hand_over()
                self._report()
                wait = (next_due if sampling_done_at is None
                        else sampling_done_at + (schedule.drain_timeout or 3600.0)) - now
                self._handle_events(max(wait, 0.0))
            if self._stopping and self._handed and self.stats.connected:
                self._settle(grace=2.0)
        finally:
            self._link.stop()
            self.stats.queued = len(self._store)
            self.stats.dropped_total = self._store.dropped
            self._store.close()
        return self.stats

    def _sample(self) -> None:
        self.stats.samples += 1
        try:
            readings = self._source.read()
        except SourceFailed as exc:
            self.stats.failed += 1
            log.warning("sample %d from %s failed: %s", self.stats.samples, self._source.name,
                        exc)
            return
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        items = []
        for reading in readings:
            # Event time is when it was measured: a reading sent after an outage keeps it.
            reading.setdefault("ts", stamp)
            items.append((self._topic, orjson.dumps(reading)))
        dropped = self._store.put(items)
        self.stats.taken += len(items)
        if dropped:
            self.stats.dropped += dropped
            now = time.monotonic()
            if now - self._last_drop_log >= DROP_LOG_EVERY_S:
                self._last_drop_log = now
                log.warning("queue full (%d readings): dropping the oldest, %d so far this run",
                            self._store.max_size, self.stats.dropped)

    def _hand_over(self) -> None:
        """Give paho the oldest readings it does not hold yet, up to the window."""
        if not self.stats.connected or self._resending:
            return
        room = self._schedule.window - len(self._handed)
        if room <= 0:
            return
        for item in self._store.peek(self._last_handed, room):
            self._handed[self._link.publish(item.topic, item.payload)] = item.id
            self._last_handed = item.id

    def _handle_events(self, timeout: float) -> None:
        """Block until the first event (or `timeout`), then take every event already there."""
        try:
            event = self._link.events.get(timeout=timeout)
        except queue.Empty:
            return
        acked: list[int] = []
        while True:
            if isinstance(event, Acked):
                row = self._handed.pop(event.mid, None)
                if row is not None:
                    acked.append(row)
            elif isinstance(event, Connected):
                self._on_connected()
            elif isinstance(event, Disconnected):
                self._on_disconnected(event.reason)
            elif isinstance(event, Refused):
                self._on_refused(event.reason)
            try:
                event = self._link.events.get_nowait()
            except queue.Empty:
                break
        if acked:
            self._store.remove(acked)
            self.stats.published += len(acked)
        if not self._handed:
            self._resending = False

    def _on_connected(self) -> None:
        backlog = len(self._store)
        if self._ever_connected:
            log.warning("connected to %s again; sending %d queued readings",
                        self._link.broker.url, backlog)
        else:
            log.info("connected to %s; %d readings queued", self._link.broker.url, backlog)
        self._ever_connected = True
        self.stats.connected = True

    def _on_disconnected(self, reason: str) -> None:
        if self.stats.connected:
            self.stats.outages += 1
            log.warning("lost %s (%s); queuing readings until it is back",
                        self._link.broker.url, reason)
        elif not self._ever_connected and not self._warned_unreachable:
            self._warned_unreachable = True
            log.warning("cannot reach %s (%s); queuing readings until it answers",
                        self._link.broker.url, reason)
        self.stats.connected = False
        self._resending = bool(self._handed)

    def _on_refused(self, reason: str) -> None:
        if not self._ever_connected:
            raise AgentError(f"{self._link.broker.url} refused the agent: {reason}",
                             hint="check --bundle, or --username/--token (`sensorlake devices "
                             "token NAME` prints a new token); readings taken so far stay "
                             "queued")
        log.warning("%s refused the agent: %s; retrying", self._link.broker.url, reason)

    def _settle(self, grace: float) -> None:
        """On Ctrl-C, give acknowledgements already on their way a moment to arrive, so they
        are not sent again next time."""
        deadline = time.monotonic() + grace
        while self._handed and self.stats.connected and time.monotonic() < deadline:
            self._handle_events(deadline - time.monotonic())

    def _report(self) -> None:
        now = time.monotonic()
        if self._on_status is not None and now - self._last_report >= 0.25:
            self._last_report = now
            self.stats.queued = len(self._store)
            self.stats.dropped_total = self._store.dropped
            self._on_status(self.stats)
