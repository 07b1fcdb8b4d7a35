"""The Iceberg tables as outputs of the pipeline: telemetry and dead_letter.

Each commit is one Iceberg metadata commit holding the new data files, any schema change the rows
need, and the table property `sensorlake.position` — so the rows and the position that says they
are there can only land together (the output contract, `pipeline/output.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table, Transaction

from sensorlake import faults
from sensorlake.faults import Faults
from sensorlake.lake.records import DecodedBatch, after
from sensorlake.lake.tables import (
    COMMITS,
    DEAD_LETTER,
    POSITION_PROPERTY,
    TELEMETRY,
    ensure_tables,
    position_key,
    read_position,
    rewritten,
)
from sensorlake.lake.transaction import transaction
from sensorlake.stream.partitions import Position

log = logging.getLogger(__name__)

REJECTED_BY = "rejected-by-"


class TableOutput:
    hold_s = 0.0

    def __init__(
        self,
        name: str,
        catalog: Catalog,
        namespace: str,
        rows_of: Callable[[DecodedBatch], pa.Table],
        *,
        sort_by: list[tuple[str, str]] | None = None,
        fault_points: Faults = faults.NO_FAULTS,
    ) -> None:
        self.name = name
        self._catalog = catalog
        self._namespace = namespace
        self._rows_of = rows_of
        self._sort_by = sort_by
        self._faults = fault_points
        self._pending: list[pa.Table] = []
        self._table: Table | None = None
        self._loaded_at = rewritten()

    @property
    def table(self) -> Table:
        if self._table is None or self._loaded_at != rewritten():
            self._loaded_at = rewritten()
            self._table = self._load()
        return self._table

    def _load(self) -> Table:
        return ensure_tables(self._catalog, self._namespace)[self.name]

    def load_position(self) -> Position:
        self._table = self._load()
        return read_position(self._table)

    def add(self, batch: DecodedBatch) -> None:
        rows = self._rows_of(batch)
        if rows.num_rows:
            self._pending.append(rows)

    def seal(self) -> pa.Table | None:
        pending, self._pending = self._pending, []
        return combine(pending)

    def discard(self) -> None:
        self._pending = []

    def note_rejected(self, readings: int, error: str) -> None:
        """Counted by the pipeline's metrics already; a rule's table counts them too."""

    def write(self, rows: pa.Table | None, through: Position) -> None:
        self._commit(rows, {POSITION_PROPERTY: through.encode()})

    def _evolve(self, tx: Transaction) -> None:
        """More table changes once the schema has grown, in the same commit (none here)."""

    def _commit(self, rows: pa.Table | None, properties: dict[str, str]) -> None:
        self._faults.hit(faults.BEFORE_COMMIT)
        table = self.table
        if rows is not None:
            rows = _without_empty_new_columns(rows, table.schema().as_arrow())
        tx = transaction(table)
        evolves = rows is not None and _new_fields(rows.schema, table.schema().as_arrow())
        if evolves and rows is not None:
            with tx.update_schema() as update:
                update.union_by_name(rows.schema)
            self._evolve(tx)
        if rows is not None and rows.num_rows:
            if self._sort_by and rows.num_rows > 1:
                rows = rows.sort_by(self._sort_by)
            tx.append(rows, snapshot_properties=properties)
        tx.set_properties(properties)
        # The data files and manifests are written; the catalog does not point at them yet.
        self._faults.hit(faults.SCHEMA_EVOLUTION if evolves else faults.BEFORE_SWAP)
        try:
            with COMMITS:
                self._table = tx.commit_transaction()
        except Exception:
            self._table = None  # reload: the catalog may have moved on without us
            raise


class DeadLetterOutput(TableOutput):
    """dead_letter: the decoder's dead letters, and what other outputs could not store."""

    def reject(self, origin: str, dead: pa.Table, through: Position) -> None:
        writer = f"{REJECTED_BY}{origin}"
        self.table.refresh()
        done = read_position(self.table, writer)
        if done.covers(through):
            return
        rows = after(dead, done)
        key = position_key(writer)
        value = done.merged(through).encode()
        self._commit(rows if rows.num_rows else None, {key: value})


def combine(pending: list[pa.Table]) -> pa.Table | None:
    """One table of batches in arrival order. Later batches may carry fields earlier ones lack
    (the schema only grows): Arrow fills them with nulls, nested struct fields included; the
    newest batch's column order is kept."""
    if not pending:
        return None
    if len(pending) == 1:
        return pending[0]
    combined = pa.concat_tables(pending, promote_options="default")
    return combined.select(pending[-1].schema.names)


def telemetry_output(catalog: Catalog, namespace: str, fault_points: Faults) -> TableOutput:
    return TableOutput(TELEMETRY, catalog, namespace, lambda b: b.readings,
                       sort_by=[("device_id", "ascending"), ("ts", "ascending")],
                       fault_points=fault_points)


def dead_letter_output(catalog: Catalog, namespace: str, fault_points: Faults
                       ) -> DeadLetterOutput:
    return DeadLetterOutput(DEAD_LETTER, catalog, namespace, lambda b: b.dead,
                            fault_points=fault_points)


def _without_empty_new_columns(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """Columns the table lacks and these rows hold no value for are not added: a column the
    decoder learnt from other rows (say, rows set apart as unstorable) must not come in with
    these."""
    known = set(schema.names)
    empty = [name for name in rows.column_names
             if name not in known and rows[name].null_count == rows.num_rows]
    return rows.drop_columns(empty) if empty else rows


def _new_fields(have: pa.Schema, table: pa.Schema) -> bool:
    """Whether `have` holds a field (at any depth) that the table's schema lacks."""
    return not _contains(table, have)


def _contains(big: pa.Schema | pa.DataType, small: pa.Schema | pa.DataType) -> bool:
    fields = {f.name: f.type for f in _fields(big)}
    for f in _fields(small):
        if f.name not in fields or not _contains(fields[f.name], f.type):
            return False
    return True


def _fields(typ: pa.Schema | pa.DataType) -> list[pa.Field]:
    if isinstance(typ, pa.Schema):
        return list(typ)
    if pa.types.is_struct(typ):
        return list(typ)
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return [pa.field("element", typ.value_type)]
    return []
