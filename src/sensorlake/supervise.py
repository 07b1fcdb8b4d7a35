"""Child processes that must keep running: started, watched, restarted with backoff, stopped.

`sensorlake up` supervises two: nats-server and the lake writer (`sensorlake worker`). Each child
gets its own process group, so Ctrl-C reaches `up` alone and `up` decides the shutdown order, and
is asked to die with `up` (even on kill -9) so no orphan holds ports or consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import random
import signal
import sys
from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def spawn(argv: Sequence[str], *, capture_stderr: bool = False,
                env: Mapping[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, **env} if env else None,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL if capture_stderr else None,
        stderr=asyncio.subprocess.PIPE if capture_stderr else None,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        start_new_session=True,
    )


class ChildSupervisor:
    """Keeps one child running; subclasses say how to start it and when it is ready."""

    name = "child"

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._replacing: asyncio.Event | None = None
        """Set while replace() swaps the child for a new one: its exit is not a crash."""
        self.restarts = 0

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def _spawn(self) -> None:
        """Start the child, set self._proc, return once it is ready (or raise)."""
        raise NotImplementedError

    async def start(self) -> None:
        await self._spawn()

    async def supervise(self) -> None:
        """Run until stop(): whenever the child dies, start it again."""
        delay = 0.2
        while not self._stopping:
            proc = self._proc
            if proc is None:
                return
            code = await proc.wait()
            if self._stopping:
                return
            if self._replacing is not None:
                await self._replacing.wait()  # replace() starts the next one
                continue
            log.warning("%s exited with code %s; restarting in %.1f s", self.name, code, delay)
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter)
            delay = min(delay * 2, 10.0)
            try:
                await self._spawn()
                self.restarts += 1
                delay = 0.2
            except Exception as exc:  # keep supervising: the next attempt may succeed
                log.error("%s restart failed: %s", self.name, exc)

    async def replace(self, grace_s: float = 8.0) -> None:
        """Stop the child as stop() does and start it again (to apply a new configuration)."""
        replacing = self._replacing = asyncio.Event()
        try:
            await self._terminate(grace_s)
            await self._spawn()
        finally:
            self._replacing = None
            replacing.set()

    async def stop(self, grace_s: float = 5.0) -> None:
        self._stopping = True
        await self._terminate(grace_s)

    async def _terminate(self, grace_s: float) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            log.warning("%s did not stop within %.0f s; killing it", self.name, grace_s)
            proc.kill()
            await proc.wait()
