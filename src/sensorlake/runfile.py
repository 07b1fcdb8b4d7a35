"""The run file `up` keeps in the data folder while it runs: its pid, its endpoints, and a
token with which commands on this machine use its HTTP API.

Whoever can read the data folder can read the lake's files anyway, so a read-scope token kept
there (mode 0600) grants nothing new; it lets `sensorlake query` ask the running server, which
has everything loaded, instead of starting a query engine of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

RUN_FILE = "run.json"


@dataclass(frozen=True)
class RunInfo:
    pid: int
    http: str
    """The address as configured, for people (`http://0.0.0.0:8080`)."""
    mqtt: str
    local_http: str = ""
    """An address this machine reaches the API on, for commands (`http://127.0.0.1:8080`)."""
    token: str = ""

    @staticmethod
    def new_token() -> str:
        return secrets.token_urlsafe(32)


def write_run_file(data_dir: Path, info: RunInfo) -> None:
    path = data_dir / RUN_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(asdict(info), out)
    os.replace(tmp, path)


def remove_run_file(data_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (data_dir / RUN_FILE).unlink()


def running(data_dir: Path) -> RunInfo | None:
    """What the `up` using this data folder wrote, if that process is still alive."""
    try:
        doc = json.loads((data_dir / RUN_FILE).read_text(encoding="utf-8"))
        info = RunInfo(**doc)
        os.kill(info.pid, 0)
    except (OSError, ValueError, TypeError):
        return None  # no run file, one from an older version, or one a killed process left
    return info
