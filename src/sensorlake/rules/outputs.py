"""A rule's `table` action: one more output of the pipeline's contract, exactly once like
telemetry.

The output takes the readings the rule's topic filter matches, and evaluates the rule when the
pipeline writes them (in the commit thread, over the whole window at once): the result rows and
the position they bring the table to land in one Iceberg commit. A reading the rule cannot be
evaluated over (RuleFailed) is isolated by the pipeline like any reading an output cannot store,
and goes to dead_letter with the rule's name and the error.

A new rule starts at the next reading: its table is created holding telemetry's position, so it
is not run over what the lake already has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table, Transaction
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import (
    DayTransform,
    HourTransform,
    IdentityTransform,
    MonthTransform,
    Transform,
    YearTransform,
)
from pyiceberg.types import LongType, NestedField, StringType, TimestamptzType

from sensorlake import faults
from sensorlake.faults import Faults
from sensorlake.lake.outputs import TableOutput
from sensorlake.lake.tables import (
    POSITION_PROPERTY,
    STREAM_FIELD,
    TABLE_PROPERTIES,
    load_or_create,
)
from sensorlake.rules.dialect import partition_field
from sensorlake.rules.evaluate import CompiledRule, Evaluator
from sensorlake.stream.partitions import Position

_TRANSFORMS: dict[str, Callable[[], Transform]] = {  # type: ignore[type-arg]
    "identity": IdentityTransform, "year": YearTransform, "month": MonthTransform,
    "day": DayTransform, "hour": HourTransform}

RULE_SCHEMA = Schema(
    NestedField(1, "ts", TimestamptzType(), required=False, doc="event time of the reading"),
    NestedField(2, "seq", LongType(), required=False, doc="stream sequence of its message"),
    NestedField(3, STREAM_FIELD, StringType(), required=False,
                doc="stream its message was read from; with seq, names the message"),
)
"""What every rule table starts with; the SELECT's columns are added as results bring them."""


class RuleTableOutput(TableOutput):
    def __init__(self, rule: CompiledRule, evaluator: Evaluator, catalog: Catalog,
                 namespace: str, start_at: Callable[[], Position],
                 fault_points: Faults = faults.NO_FAULTS, hold_s: float = 0.0) -> None:
        assert rule.config.table is not None
        super().__init__(rule.config.table, catalog, namespace,
                         lambda batch: evaluator.matching(rule, batch.readings),
                         fault_points=fault_points)
        self.rule = rule
        self.hold_s = hold_s  # lake.rule_flush_interval
        self._evaluator = evaluator
        self._start_at = start_at
        kind, source = partition_field(rule.config.partition_by or "day(ts)")
        self._partition = (kind, source)

    def _load(self) -> Table:
        return load_or_create(self._catalog, self._namespace, self.name, self._creation)

    def _creation(self) -> dict[str, Any]:
        """How the table is created: holding telemetry's position, so that a new rule starts
        at the next reading."""
        kind, source = self._partition
        spec = PartitionSpec()
        if source == "ts":
            spec = PartitionSpec(PartitionField(source_id=1, field_id=1000,
                                                transform=_TRANSFORMS[kind](),
                                                name=f"ts_{kind}"))
        properties = {**TABLE_PROPERTIES, POSITION_PROPERTY: self._start_at().encode(),
                      "sensorlake.rule": self.rule.name}
        return {"schema": RULE_SCHEMA, "partition_spec": spec,
                "sort_order": SortOrder(SortField(source_id=1, transform=IdentityTransform())),
                "properties": properties}

    def write(self, rows: pa.Table | None, through: Position) -> None:
        result = None
        if rows is not None and rows.num_rows:
            result = self._evaluator.evaluate(self.rule, rows)
        self._commit(result if result is not None and result.num_rows else None,
                     {POSITION_PROPERTY: through.encode()})
        if rows is not None and result is not None:
            self.rule.counters.matched += rows.num_rows
            self.rule.counters.emitted += result.num_rows

    def note_rejected(self, readings: int, error: str) -> None:
        """Readings the pipeline set apart into dead_letter, because of this rule."""
        self.rule.counters.matched += readings
        self.rule.counters.errors += readings
        self.rule.counters.last_error = error

    def _evolve(self, tx: Transaction) -> None:
        """Partition by a field of the results once they bring it (the table starts without)."""
        kind, source = self._partition
        metadata = tx.table_metadata
        if source == "ts" or metadata.spec().fields:
            return
        if source in {f.name for f in metadata.schema().fields}:
            with tx.update_spec() as spec:
                spec.add_field(source, _TRANSFORMS[kind](), f"{source}_{kind}")
