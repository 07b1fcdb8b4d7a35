"""Logging: quiet by default (warnings), plain `key=value` text or JSON lines for collectors."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(level: str = "warning", json_format: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
        )
    root = logging.getLogger("sensorlake")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # pyiceberg warns of what it handles itself — a commit retried after a lost race with
    # maintenance, an old metadata file another commit already removed — in plain text through
    # Python's last-resort handler. Its errors are ours to show, in our format; its warnings
    # only when debugging.
    library = logging.getLogger("pyiceberg")
    library.handlers[:] = [handler]
    library.setLevel("DEBUG" if level.upper() == "DEBUG" else "ERROR")
    library.propagate = False
