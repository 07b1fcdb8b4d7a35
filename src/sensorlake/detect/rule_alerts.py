"""A rule with `alert = "CHANNEL"` as a detector: each result row is an anomaly of its reading,
and a reading the rule's filter matches that yields no row clears the device's alert."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.detect.detectors import Detection, Detector, Readings, Verdict
from sensorlake.lake.tables import STREAM_FIELD
from sensorlake.rules.evaluate import CompiledRule, Evaluator, RuleFailed


class RuleDetector(Detector):
    def __init__(self, rule: CompiledRule, evaluator: Evaluator) -> None:
        self.rule = rule
        self.name = rule.name
        self.topic = rule.translated.topic_filter
        self.state = {}
        self._evaluator = evaluator

    def check(self, readings: Readings, now_us: int) -> tuple[list[Detection], list[Verdict]]:
        matched = self._evaluator.matching(self.rule, readings.table)
        if not matched.num_rows:
            return [], []
        try:
            result = self._evaluator.evaluate(self.rule, matched)
        except RuleFailed:
            return [], []  # the rule's own outputs set such readings apart; no alert from it
        rows = readings.matching(self.topic)
        hits: dict[tuple[str | None, int | None], dict[str, Any]] = {}
        if result.num_rows:
            added = set(self.rule.added(matched.schema))
            for row in result.to_pylist():
                hits.setdefault((row.get(STREAM_FIELD), row.get("seq")),
                                {k: v for k, v in row.items() if k not in added})
        bad = np.zeros(len(rows), dtype=bool)
        detections: list[Detection] = []
        streams, seqs = readings.table[STREAM_FIELD], readings.table["seq"]
        candidates: list[int] = []
        if hits:  # only the readings whose sequence a result row carries
            wanted = pa.array(sorted({seq for _, seq in hits if seq is not None}), pa.int64())
            mask = pc.is_in(seqs.take(pa.array(rows)), value_set=wanted)
            candidates = np.flatnonzero(mask.to_numpy(zero_copy_only=False)).tolist()
        for k in candidates:
            i = int(rows[k])
            shown = hits.get((streams[i].as_py(), seqs[i].as_py()))
            if shown is None:
                continue
            bad[k] = True
            field, value = next(iter(shown.items()), ("", None))
            number = float(value) if isinstance(value, int | float) and not isinstance(
                value, bool) else None
            detections.append(Detection(
                self.name, "rule", readings.device(i), readings.topics[i], field,
                number, None if value is None else str(value),
                f"no row of rule '{self.name}'", "warning", int(readings.ts_us[i]),
                readings.stream(i), readings.seq(i)))
        checked = np.ones(len(rows), dtype=bool)
        return detections, self._conditions(readings, rows, bad, checked, detections)
