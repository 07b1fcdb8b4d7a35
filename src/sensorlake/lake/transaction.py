"""A pyiceberg transaction that works out its pending table metadata once per change.

pyiceberg's `Transaction.table_metadata` (0.12) replays every staged update and then deep-copies
the whole result — every snapshot, the snapshot log, the metadata log — each time it is read, and
one append reads it about 19 times. A commit's cost then follows the table's history, not the
data it writes: ~40 ms on a new table, 130–160 ms once it keeps 100 snapshots (as a table
committed every few seconds always does, between two snapshot expiries). With a table per rule,
those copies were most of what rules cost a long-running worker (`benchmarks/commit_cost.py`).

The table's metadata and the tuple of staged updates are both replaced, never changed, when the
transaction moves on (a staged update, a refresh after a lost race, a rebuilt retry), so what a
read computes depends only on which two objects it starts from: one result per such pair serves
every read until either is replaced.
"""

from __future__ import annotations

from pyiceberg.table import Table
from pyiceberg.table import Transaction as _IcebergTransaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import TableUpdate, update_table_metadata


class Transaction(_IcebergTransaction):
    _computed: tuple[TableMetadata, tuple[TableUpdate, ...], TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates = self._table.metadata, self._updates
        computed = self._computed
        if computed is None or computed[0] is not base or computed[1] is not updates:
            computed = self._computed = (base, updates, update_table_metadata(base, updates))
        return computed[2]


def transaction(table: Table) -> Transaction:
    """What `table.transaction()` gives, reading its pending metadata at a fixed cost."""
    return Transaction(table)
