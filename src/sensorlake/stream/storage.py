"""Whether the stream can store more, and if not, why — in words a user can act on.

A full disk under the embedded server's store makes JetStream fail every write ("no space left
on device"), and it answers a publish with nothing at all: an ingest request would wait for its
ack until the timeout and learn nothing. So `up` watches the disk: while it is full, ingest is
refused at once with the cause (507), /healthz reports it, and once space is free again the
server — whose stream stays in its write-error state — is restarted.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sensorlake.config import Config

MiB = 1024 * 1024


def _mb(size: int) -> str:
    return f"{size / MiB:,.1f} MB"


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@dataclass
class StorageWatch:
    config: Config
    problem: str | None = None
    since: float | None = None
    """Wall-clock time the current problem was first seen."""
    failed: bool = False
    """A write of the stream failed while the disk was full: the server needs a restart."""

    @property
    def store(self) -> Path:
        return self.config.data_dir / "nats"

    @property
    def margin(self) -> int:
        """Free space below which the stream counts as full: room for its largest messages."""
        return 2 * self.config.stream.max_payload

    def diagnose(self) -> str | None:
        """The reason the stream cannot store more, or None. Only the embedded server's disk is
        known here; an external NATS server reports its own limits in its errors."""
        if not self.config.embedded_nats:
            return None
        usage = shutil.disk_usage(_existing(self.store))
        if usage.free >= self.margin:
            return None
        return (f"the disk holding the stream ({self.store}) is full: {_mb(usage.free)} free "
                f"of {_mb(usage.total)}, less than the {_mb(self.margin)} it keeps free for "
                "the largest messages (2 × stream.max_payload)")

    def update(self) -> bool:
        """Look again; True when the disk has room again after the stream failed on it (the
        caller then restarts the server)."""
        problem = self.diagnose()
        if problem is not None:
            if self.problem is None:
                self.since = time.time()
            self.problem = problem
            return False
        recovered = self.problem is not None and self.failed
        self.problem = self.since = None
        self.failed = False
        return recovered

    def note_failure(self) -> str | None:
        """A publish failed: is the disk why? Remembers it for `update`."""
        self.update()
        if self.problem is not None:
            self.failed = True
        return self.problem
