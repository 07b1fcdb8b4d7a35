"""The lake's transaction computes pending metadata once per change; every change still shows,
and pyiceberg's retry after a lost race still lands both writers' rows."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import DoubleType, LongType, NestedField

from sensorlake.lake.transaction import transaction
from tests.pipeline.test_commit import catalog  # noqa: F401 (fixture)

SCHEMA = Schema(NestedField(1, "n", LongType(), required=False))


def rows(*ns: int, x: bool = False) -> pa.Table:
    columns: dict[str, pa.Array] = {"n": pa.array(ns, pa.int64())}
    if x:
        columns["x"] = pa.array([n / 2 for n in ns], pa.float64())
    return pa.table(columns)


def test_each_staged_change_shows_in_the_pending_metadata(catalog: Catalog) -> None:  # noqa: F811
    catalog.create_namespace("t")
    table = catalog.create_table(("t", "a"), schema=SCHEMA)
    tx = transaction(table)
    before = tx.table_metadata
    assert tx.table_metadata is before  # no change, no new copy
    tx.set_properties({"p": "1"})
    assert tx.table_metadata is not before
    assert tx.table_metadata.properties["p"] == "1"
    with tx.update_schema() as update:
        update.add_column("x", DoubleType())
    assert "x" in tx.table_metadata.schema().column_names
    tx.append(rows(1, 2, x=True))  # needs the schema staged just above
    tx.set_properties({"p": "2"})
    committed = tx.commit_transaction()
    reloaded = catalog.load_table(("t", "a"))
    assert reloaded.properties["p"] == "2"
    assert sorted(reloaded.scan().to_arrow()["x"].to_pylist()) == [0.5, 1.0]
    assert len(reloaded.metadata.snapshots) == 1
    assert committed.metadata.current_snapshot_id == reloaded.metadata.current_snapshot_id


def test_a_commit_that_lost_a_race_is_retried_on_the_new_metadata(
        catalog: Catalog) -> None:  # noqa: F811
    catalog.create_namespace("t")
    stale = catalog.create_table(("t", "b"), schema=SCHEMA)
    other = catalog.load_table(("t", "b"))
    for n in range(3):
        tx = transaction(other)
        tx.append(rows(100 + n))
        other = tx.commit_transaction()
    tx = transaction(stale)  # three snapshots behind: its first attempt fails, then a retry
    tx.append(rows(1))
    tx.commit_transaction()
    reloaded = catalog.load_table(("t", "b"))
    assert sorted(reloaded.scan().to_arrow()["n"].to_pylist()) == [1, 100, 101, 102]
    assert len(reloaded.metadata.snapshots) == 4
