"""Any program as a sensor: it prints one JSON object, or a JSON array of them, per run."""

from __future__ import annotations

import shlex
import subprocess
from typing import Any

import orjson

from sensorlake.agent.sources.base import SourceFailed
from sensorlake.errors import AgentError


class CommandSource:
    """Runs without a shell, so a reading's command line is exactly what the user wrote;
    `sh -c '…'` gives pipes and variables to those who want them."""

    name = "command"

    def __init__(self, command: str, timeout: float = 30.0) -> None:
        try:
            self._argv = shlex.split(command)
        except ValueError as exc:
            raise AgentError(f"cannot parse --command {command!r}: {exc}",
                             hint="quote it as a shell would") from exc
        if not self._argv:
            raise AgentError("--source command needs --command",
                             hint='e.g. --command "python3 read_dht22.py"')
        self._timeout = timeout

    def read(self) -> list[dict[str, Any]]:
        try:
            done = subprocess.run(self._argv, capture_output=True, timeout=self._timeout,
                                  check=False, stdin=subprocess.DEVNULL)
        except (FileNotFoundError, PermissionError) as exc:
            # Fails the same way on every run: a reason to stop, not to log forever.
            raise AgentError(f"cannot run {self._argv[0]!r}: {exc}",
                             hint="give --command a program on PATH or its full path") from exc
        except subprocess.TimeoutExpired as exc:
            raise SourceFailed(f"the command took more than {self._timeout:g} s") from exc
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-300:]
            raise SourceFailed(f"the command exited with {done.returncode}: {tail}")
        return parse_readings(done.stdout)


def parse_readings(output: bytes) -> list[dict[str, Any]]:
    """One JSON object, or an array of objects; anything else is a failed sample."""
    try:
        value = orjson.loads(output)
    except orjson.JSONDecodeError as exc:
        shown = output.decode(errors="replace").strip()[:200]
        raise SourceFailed(f"the command printed no JSON ({exc}): {shown!r}") from exc
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, dict) for item in items):
        raise SourceFailed("the command must print a JSON object or an array of objects")
    return items
