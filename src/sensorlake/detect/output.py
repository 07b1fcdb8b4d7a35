"""The detectors as an output of the pipeline's contract: every detection a row of the
`anomalies` table exactly once, and detector state that survives restarts.

Detection runs as each batch is read (`add`, on the event loop), so an alert is raised within
the second, not at the next commit. What a commit must make durable is the state the detectors
reached (rolling windows, last values, silence timers, the alerts) *with* the position it
reflects, and the anomaly rows of that step: a checkpoint (`pipeline/checkpoint.py`). After a
restart the state is the checkpoint's, and the stream after its position rebuilds the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestamptzType

from sensorlake import faults
from sensorlake.alerts.facts import AlertFacts
from sensorlake.detect.detectors import Detection, Detector, Readings, Verdict
from sensorlake.faults import Faults
from sensorlake.lake.records import DecodedBatch
from sensorlake.lake.tables import POSITION_PROPERTY, STREAM_FIELD, TABLE_PROPERTIES, load_or_create
from sensorlake.pipeline.checkpoint import CheckpointedOutput, CheckpointStore
from sensorlake.stream.partitions import Position

log = logging.getLogger(__name__)

ANOMALIES = "anomalies"
TICK_S = 1.0
"""How often silence is looked for (each look walks every device's timer)."""
CAUGHT_UP_S = 5.0
"""Silence is judged only once the worker reads readings this fresh (or none come): while it
catches up on a backlog, every device would look silent."""

ANOMALIES_SCHEMA = Schema(
    NestedField(1, "ts", TimestamptzType(), required=False,
                doc="event time of the reading; for silence, when it was found"),
    NestedField(2, "detected_at", TimestamptzType(), required=False),
    NestedField(3, "device_id", StringType(), required=False),
    NestedField(4, "detector", StringType(), required=False),
    NestedField(5, "kind", StringType(), required=False),
    NestedField(6, "field", StringType(), required=False),
    NestedField(7, "value", DoubleType(), required=False),
    NestedField(8, "value_text", StringType(), required=False, doc="the value as sent"),
    NestedField(9, "expected", StringType(), required=False,
                doc="the range, value or baseline a normal reading has"),
    NestedField(10, "severity", StringType(), required=False),
    NestedField(11, "topic", StringType(), required=False),
    NestedField(12, "seq", LongType(), required=False, doc="stream sequence of the reading"),
    NestedField(13, STREAM_FIELD, StringType(), required=False),
)
ANOMALIES_ARROW = ANOMALIES_SCHEMA.as_arrow()


def anomaly_rows(detections: Sequence[Detection], detected_us: Sequence[int]) -> pa.Table:
    return pa.table({
        "ts": [d.ts_us for d in detections],
        "detected_at": list(detected_us),
        "device_id": [d.device for d in detections],
        "detector": [d.detector for d in detections],
        "kind": [d.kind for d in detections],
        "field": [d.field or None for d in detections],
        "value": [d.value for d in detections],
        "value_text": [d.value_text for d in detections],
        "expected": [d.expected for d in detections],
        "severity": [d.severity for d in detections],
        "topic": [d.topic or None for d in detections],
        "seq": [d.seq for d in detections],
        STREAM_FIELD: [d.stream for d in detections],
    }, schema=ANOMALIES_ARROW)


class AnomalyOutput(CheckpointedOutput):
    def __init__(self, detectors: Sequence[Detector], facts: AlertFacts, store: CheckpointStore,
                 catalog: Catalog, namespace: str, start_at: Callable[[], Position],
                 fault_points: Faults = faults.NO_FAULTS) -> None:
        super().__init__(ANOMALIES, catalog, namespace, lambda _: pa.table({}),
                         fault_points=fault_points)
        self.detectors = list(detectors)
        self.facts = facts
        self.store = store
        self._start_at = start_at
        self._detections: list[Detection] = []
        self._detected_us: list[int] = []
        self._seen = Position()
        self._sealed: tuple[bytes, Position] | None = None
        self._fresh_at = 0.0
        """When the worker last read a batch as fresh as CAUGHT_UP_S, or found nothing."""
        self._read_at = 0.0
        self._ticked_at = 0.0
        self.on_detection: Callable[[], None] = lambda: None
        self.failures: dict[str, int] = {}
        """Batches each detector failed on (a defect: logged, the batch skipped)."""

    # -- the table -------------------------------------------------------------------------

    def _load(self) -> Table:
        return load_or_create(self._catalog, self._namespace, self.name, lambda: {
            "schema": ANOMALIES_SCHEMA,
            "partition_spec": PartitionSpec(PartitionField(source_id=1, field_id=1000,
                                                           transform=DayTransform(),
                                                           name="ts_day")),
            "sort_order": SortOrder(SortField(source_id=1, transform=IdentityTransform())),
            "properties": TABLE_PROPERTIES})

    # -- the output contract -----------------------------------------------------------------

    def add(self, batch: DecodedBatch) -> None:
        self._seen = self._seen.merged(batch.through)
        readings = batch.readings
        now = time.time()
        self._read_at = now
        if readings.num_rows and "received_at" in readings.column_names:
            latest = pc.max(readings["received_at"].cast(pa.int64())).as_py()
            if latest is not None and now - latest / 1e6 <= CAUGHT_UP_S:
                self._fresh_at = now
        if not readings.num_rows:
            return
        view = Readings(readings)
        now_us = int(now * 1e6)
        for detector in self.detectors:
            try:
                detections, verdicts = detector.check(view, now_us)
            except Exception as exc:  # a defect in one detector must not stop the pipeline
                self._failed(detector, exc)
                continue
            self._took(detections, verdicts, now, now_us)

    def _failed(self, detector: Detector, exc: Exception) -> None:
        times = self.failures[detector.name] = self.failures.get(detector.name, 0) + 1
        if times in (1, 10, 100, 1000) or times % 10_000 == 0:
            log.error("detector %s failed on a batch (%s times so far), which it skipped: "
                      "%s: %s", detector.name, times, type(exc).__name__, exc,
                      exc_info=times == 1)

    def tick(self) -> None:
        """Detections that time makes (silence), on the event loop, once a second."""
        now = time.time()
        if now - self._ticked_at < TICK_S:
            return
        self._ticked_at = now
        if now - self._read_at > CAUGHT_UP_S:  # nothing to read lately: caught up
            self._fresh_at = now
        if now - self._fresh_at > CAUGHT_UP_S:
            return
        now_us = int(now * 1e6)
        for detector in self.detectors:
            try:
                detections, verdicts = detector.tick(now_us)
            except Exception as exc:
                self._failed(detector, exc)
                continue
            self._took(detections, verdicts, now, now_us)

    def _took(self, detections: list[Detection], verdicts: list[Verdict], now: float,
              now_us: int) -> None:
        if detections:
            self._detections += detections
            self._detected_us += [now_us] * len(detections)
        if verdicts:
            self.facts.apply(verdicts, now)
            if self.facts.changed:
                self.on_detection()

    @property
    def asks_commit(self) -> bool:
        """Rows no stream message brought (silence) wait for a commit of their own."""
        return bool(self._detections)

    def seal(self) -> pa.Table | None:
        detections, self._detections = self._detections, []
        detected, self._detected_us = self._detected_us, []
        self._sealed = (self._dump(), self._seen)
        return anomaly_rows(detections, detected) if detections else None

    def discard(self) -> None:
        super().discard()
        self._detections, self._detected_us = [], []
        self._sealed = None

    def write(self, rows: pa.Table | None, through: Position) -> None:
        self._faults.hit(faults.BEFORE_COMMIT)
        if self.done(through):
            return
        sealed = self._sealed
        if sealed is None or not through.covers(sealed[1]):
            # Part of a window (the pipeline isolating rows): the checkpoint waits for the
            # whole window, so that state and position always match.
            if rows is not None and rows.num_rows:
                self._commit(rows, {POSITION_PROPERTY: through.encode()})
            return
        self.checkpoint(sealed[0], rows, through)

    # -- state ---------------------------------------------------------------------------------

    def _start(self) -> Position:
        return self._start_at()

    def _dump(self) -> bytes:
        return orjson.dumps({"detectors": {d.name: {"shape": _shape(d), "devices": d.dump()}
                                           for d in self.detectors},
                             "alerts": self.facts.state()})

    def _restore(self, data: bytes, position: Position) -> None:
        self._seen = position
        state: dict[str, Any] = orjson.loads(data)
        kept = state.get("detectors", {})
        for detector in self.detectors:
            saved = kept.get(detector.name)
            # A detector whose kind or field changed since starts afresh.
            fits = isinstance(saved, dict) and saved.get("shape") == _shape(detector)
            detector.load(saved["devices"] if fits else {})
        self.facts.restore(state.get("alerts", []))


def _shape(detector: Detector) -> str:
    config = getattr(detector, "config", None)
    if config is None:  # a rule's alert: no state
        return "rule"
    return f"{config.kind}:{config.field}:{config.window}"

