"""Each channel's delivery loop: the durable queue, oldest first, one request at a time.

A 429 is waited out as the channel says (no request goes before it expires); a 5xx, a timeout or
a refused connection is retried with jittered exponential backoff; after the channel's
`max_attempts` the notification is given up. A 4xx other than 408 and 429 refuses it for good.
Every attempt is a row of the alert log. The loop runs beside the pipeline, on the worker's
event loop, with the database work in threads: a slow or dead channel never holds up ingest or
detection — its notifications wait in the queue (bounded by alerts.max_queue).

A crash between a successful request and the write that records it sends that one notification
again after the restart: the only case in which a notification is sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from sensorlake.alerts.channels import ChannelClient
from sensorlake.alerts.store import AlertStore

log = logging.getLogger(__name__)

BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
IDLE_S = 1.0


class Delivery:
    def __init__(self, client: ChannelClient, store: AlertStore, wake: asyncio.Event) -> None:
        self.client = client
        self._store = store
        self._wake = wake

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    if not await self._one(stop):
                        self._wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), IDLE_S)
                except Exception as exc:  # the database away: try again shortly
                    log.warning("alerts: channel %s: %s: %s", self.client.channel.name,
                                type(exc).__name__, exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), IDLE_S)
        finally:
            await self.client.close()

    async def _one(self, stop: asyncio.Event) -> bool:
        """Deliver the oldest notification waiting; False when none waits."""
        channel = self.client.channel
        notification = await asyncio.to_thread(self._store.next, channel.name)
        if notification is None:
            return False
        attempts = notification.attempts
        delay = BACKOFF_S
        while not stop.is_set():
            await self.client.wait_turn(stop)
            if stop.is_set():
                return True
            attempts += 1
            started = time.perf_counter()
            outcome = await self.client.send(notification.body)
            latency = (time.perf_counter() - started) * 1000
            if outcome.ok:
                status, done = "sent", True
            elif outcome.refused:
                status, done = "refused", True
            elif attempts >= channel.max_attempts:
                status, done = "gave_up", True
            else:
                status, done = ("rate_limited" if outcome.code == 429 else "retry"), False
            await asyncio.to_thread(self._store.attempted, notification, status, attempts,
                                    round(latency, 3), outcome.code, outcome.error, done)
            if done:
                if not outcome.ok:
                    log.error("alerts: channel %s: notification %s %s after %s attempts: %s",
                              channel.name, notification.id, status.replace("_", " "),
                              attempts, outcome.error)
                return True
            log.warning("alerts: channel %s: attempt %s failed: %s", channel.name, attempts,
                        outcome.error)
            if outcome.retry_after is None:  # a 429 already set when the next may go
                self.client.block(delay * (0.5 + random.random()))  # noqa: S311 (jitter)
                delay = min(delay * 2, MAX_BACKOFF_S)
        return True
