"""Named points where the crash tests make a process kill itself (SIGKILL), mid-commit.

A guarantee is only as good as the worst moment a crash was tried at, so every place where the
state of the lake or the stream changes has a name here. Off unless `SENSORLAKE_FAULTS` is set,
e.g. `SENSORLAKE_FAULTS="before-swap,after-commit@0.2"`: a point without a probability fires once
per data dir (a marker file remembers it, so the restarted process can finish); with `@p` it
fires each time it is reached with probability p, for kill loops.
"""

from __future__ import annotations

import logging
import os
import random
import signal
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "SENSORLAKE_FAULTS"

BEFORE_COMMIT = "before-commit"
"""An output is about to write (no file written yet)."""
BEFORE_SWAP = "before-swap"
"""An output's data files and manifests are written; the catalog does not point at them yet."""
SCHEMA_EVOLUTION = "schema-evolution"
"""Like before-swap, in a commit that also changes the table's schema."""
BETWEEN_OUTPUTS = "between-outputs"
"""One output (dead_letter) has committed, the next (telemetry) has not."""
AFTER_COMMIT = "after-commit"
"""Every output has committed; the stream has not been acknowledged."""

AFTER_CHECKPOINT = "after-checkpoint"
"""The detectors' checkpoint (state, position, anomaly rows) is written; the anomalies table
does not hold its rows yet."""

POINTS = (BEFORE_COMMIT, BEFORE_SWAP, SCHEMA_EVOLUTION, BETWEEN_OUTPUTS, AFTER_COMMIT,
          AFTER_CHECKPOINT)


class Faults:
    def __init__(self, spec: str, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._points: dict[str, float | None] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, _, probability = item.partition("@")
            if name not in POINTS:
                raise ValueError(f"{ENV}: unknown fault point {name!r} (known: {POINTS})")
            self._points[name] = float(probability) if probability else None
        self._random = random.Random()  # noqa: S311 (test-only randomness, not security)

    @classmethod
    def from_env(cls, data_dir: Path) -> Faults:
        return cls(os.environ.get(ENV, ""), data_dir)

    @property
    def armed(self) -> bool:
        return bool(self._points)

    def hit(self, point: str) -> None:
        if point not in self._points:
            return
        probability = self._points[point]
        if probability is None:
            marker = self._data_dir / f"fault-{point}.fired"
            if marker.exists():
                return
            marker.touch()
        elif self._random.random() >= probability:
            return
        log.warning("fault point %s: killing this process", point)
        os.kill(os.getpid(), signal.SIGKILL)


NO_FAULTS = Faults("", Path())
