"""The key set as `up` sees it while running.

Keys created or revoked by the CLI (another process) must take effect within about a second,
without a restart and without a database visit per request: requests read an in-memory snapshot
that is re-read from registry.db at most every `ttl` seconds, in a worker thread so a slow disk
never stalls the event loop. Last-used times are collected in memory and written at most every
`touch_every` seconds, so a busy key costs no write per request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable

from sensorlake.access.keys import KeySet, KeyStore
from sensorlake.errors import KeyRegistryError

log = logging.getLogger(__name__)


class LiveKeys:
    def __init__(self, store: KeyStore, *, ttl: float = 0.5, touch_every: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._ttl = ttl
        self._touch_every = touch_every
        self._clock = clock
        self._lock = asyncio.Lock()
        self._keys: KeySet | None = None
        self._failure: KeyRegistryError | None = None
        self._loaded_at = 0.0
        self._used: dict[str, str] = {}
        self._touched_at = 0.0
        self._touch: asyncio.TimerHandle | asyncio.Task[None] | None = None

    async def current(self) -> KeySet:
        """The keys as of at most `ttl` ago; raises KeyRegistryError while the file is unreadable
        (failing closed: a registry we cannot read might hold a revocation)."""
        if not self._stale():
            return self._cached()
        async with self._lock:
            if self._stale():
                await self._reload()
            return self._cached()

    def used(self, key_id: str) -> None:
        """Note a key's use; written by a timer, so a key used once is recorded too."""
        self._used[key_id] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        if self._touch is None:
            delay = max(0.0, self._touched_at + self._touch_every - self._clock())
            self._touch = asyncio.get_running_loop().call_later(delay, self._start_touch)

    def _stale(self) -> bool:
        if self._keys is None and self._failure is None:
            return True
        return self._clock() - self._loaded_at >= self._ttl

    def _cached(self) -> KeySet:
        if self._failure is not None:
            raise self._failure
        assert self._keys is not None
        return self._keys

    async def _reload(self) -> None:
        try:
            self._keys = await asyncio.to_thread(self._store.load)
            self._failure = None
        except KeyRegistryError as exc:
            if self._failure is None:
                log.warning("refusing API requests until the key registry is readable: %s", exc)
            self._failure = exc
        self._loaded_at = self._clock()

    def _start_touch(self) -> None:
        # The task is kept in self._touch until done, so it cannot be collected mid-write.
        self._touch = asyncio.get_running_loop().create_task(self._write_touches(),
                                                             name="record API key use")

    async def _write_touches(self) -> None:
        pending, self._used = self._used, {}
        self._touched_at = self._clock()
        try:
            await asyncio.to_thread(self._store.touch, pending)
        except KeyRegistryError as exc:
            log.warning("could not record when API keys were last used: %s", exc)
        finally:
            self._touch = None
            if self._used:  # used again while writing: write those at the next turn
                self._touch = asyncio.get_running_loop().call_later(
                    self._touch_every, self._start_touch)
