"""Device state as an output of the pipeline's contract: exactly once, like telemetry.

It takes every reading (and evaluates the rules with `state = true` over them when it writes,
in the commit thread); each write merges the window's per-device summaries and records the
position in one database transaction. A replayed window is skipped by position before it
reaches here, so counts are never doubled.

Started on a lake that already holds readings, device state begins at telemetry's position:
it is built from what arrives from then on, not by re-reading the stream's whole retention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa

from sensorlake import faults
from sensorlake.faults import Faults
from sensorlake.lake.outputs import combine
from sensorlake.lake.records import DecodedBatch
from sensorlake.rules.evaluate import CompiledRule, Evaluator
from sensorlake.state.records import DEVICE_STATE, Summarizer
from sensorlake.state.store import StateStore
from sensorlake.stream.partitions import Position


class DeviceStateOutput:
    name = DEVICE_STATE
    hold_s = 0.0

    def __init__(self, store: StateStore, start_at: Callable[[], Position],
                 rules: Sequence[CompiledRule] = (), evaluator: Evaluator | None = None,
                 fault_points: Faults = faults.NO_FAULTS) -> None:
        self.store = store
        self._start_at = start_at
        self._rules = list(rules)
        self._evaluator = evaluator
        self._faults = fault_points
        self._summarizer = Summarizer()
        self._pending: list[pa.Table] = []

    def load_position(self) -> Position:
        held = self.store.position(self.name)
        if held is None:  # never written: start where telemetry is
            held = self._start_at()
            self.store.apply(self.name, [], held)
        return held

    def add(self, batch: DecodedBatch) -> None:
        if batch.readings.num_rows:
            self._pending.append(batch.readings)

    def seal(self) -> pa.Table | None:
        pending, self._pending = self._pending, []
        return combine(pending)

    def discard(self) -> None:
        self._pending = []

    def write(self, rows: pa.Table | None, through: Position) -> None:
        self._faults.hit(faults.BEFORE_COMMIT)
        states = []
        if rows is not None and rows.num_rows:
            states = self._summarizer.readings(rows)
            for rule in self._rules:
                assert self._evaluator is not None
                results = self._evaluator.evaluate(rule, rows)  # RuleFailed: isolated
                states += self._summarizer.rule_rows(rule.name, results, rows)
                if rule.config.table is None:  # else its table's output counts them
                    rule.counters.matched += self._evaluator.matching(rule, rows).num_rows
                    rule.counters.emitted += results.num_rows
        # Written, not committed: the point where a crash must leave the store as it was.
        self.store.apply(self.name, states, through,
                         before_commit=lambda: self._faults.hit(faults.BEFORE_SWAP))

    def note_rejected(self, readings: int, error: str) -> None:
        for rule in self._rules:
            if rule.config.table is None and f"rule '{rule.name}'" in error:
                rule.counters.matched += readings
                rule.counters.errors += readings
                rule.counters.last_error = error
