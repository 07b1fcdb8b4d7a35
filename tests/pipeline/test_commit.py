"""The output contract on real Iceberg tables (a SQLite catalog in a temp dir): rows and position
land together, a replay stores nothing twice, a row the table cannot take is set apart into
dead_letter, and a destination that is down is waited for."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog, load_catalog

from sensorlake.faults import NO_FAULTS
from sensorlake.ingest.identity import IdentityRules
from sensorlake.lake.outputs import (
    REJECTED_BY,
    DeadLetterOutput,
    TableOutput,
    dead_letter_output,
    telemetry_output,
)
from sensorlake.lake.records import DecodedBatch, Decoder
from sensorlake.lake.tables import (
    SEQ_PROPERTY,
    STREAM_PROPERTY,
    TELEMETRY_SCHEMA,
    ensure_tables,
    read_position,
)
from sensorlake.metrics import WriterMetrics
from sensorlake.pipeline.commit import Committer, dead_rows
from sensorlake.stream.partitions import Position
from tests.lake.test_records import PARTITION, delivery, drained


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    (tmp_path / "wh").mkdir()
    return load_catalog("sensorlake", type="sql", uri=f"sqlite:///{tmp_path / 'catalog.db'}",
                        warehouse=(tmp_path / "wh").as_uri())


def outputs(catalog: Catalog) -> tuple[TableOutput, DeadLetterOutput]:
    return (telemetry_output(catalog, "sensorlake", NO_FAULTS),
            dead_letter_output(catalog, "sensorlake", NO_FAULTS))


def decode(*payloads: Any, first: int = 1) -> DecodedBatch:
    decoder = Decoder(IdentityRules(), TELEMETRY_SCHEMA.as_arrow())
    return decoder.decode([(PARTITION, drained(*(delivery(first + i, p)
                                                 for i, p in enumerate(payloads))))])


def values(table: TableOutput, column: str = "v") -> list[Any]:
    table.table.refresh()
    return sorted(table.table.scan().to_arrow()[column].to_pylist())


def test_rows_and_position_land_together_and_a_replay_stores_nothing_twice(
        catalog: Catalog) -> None:
    telemetry, _ = outputs(catalog)
    committer = Committer(WriterMetrics())
    batch = decode({"v": 1}, [{"v": 2}, {"v": 3}], {"v": 4})
    telemetry.add(batch)
    done = committer.commit(telemetry, telemetry.seal(), batch.through, telemetry.load_position(),
                            None)
    assert dict(done.seqs) == {"TELEMETRY": 3}
    assert values(telemetry) == [1.0, 2.0, 3.0, 4.0]
    assert read_position(catalog.load_table(("sensorlake", "telemetry"))) == done
    # A restart that reads the same messages again (and one more) stores only the new one.
    again = decode({"v": 1}, [{"v": 2}, {"v": 3}], {"v": 4}, {"v": 5})
    telemetry.add(again)
    committer.commit(telemetry, telemetry.seal(), again.through, telemetry.load_position(), None)
    assert values(telemetry) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_row_the_table_cannot_take_is_set_apart_and_the_rest_is_stored(
        catalog: Catalog) -> None:
    telemetry, dead = outputs(catalog)
    committer = Committer(WriterMetrics(), sleep=lambda _: None)
    batch = decode({"v": 1}, {"v": 2}, {"v": 3})
    # A column Iceberg refuses (the decoder would never make one): only message 2 has it.
    poison = pa.array([None, 7.0, None], pa.float64())
    rows = batch.readings.append_column(pa.field("", pa.float64()), poison)
    done = committer.commit(telemetry, rows, batch.through, telemetry.load_position(), dead)
    assert dict(done.seqs) == {"TELEMETRY": 3}
    assert values(telemetry) == [1.0, 3.0]
    dead.table.refresh()
    letters = dead.table.scan().to_arrow().to_pylist()
    assert [(d["seq"], d["stream"]) for d in letters] == [(2, "TELEMETRY")]
    assert letters[0]["reason"].startswith("telemetry cannot store this reading")
    assert orjson.loads(letters[0]["raw"])["v"] == 2.0
    assert read_position(dead.table, f"{REJECTED_BY}telemetry").seqs == {"TELEMETRY": 2}
    # Replayed after a crash: nothing lands twice, in either table.
    committer.commit(telemetry, rows, batch.through, telemetry.load_position(), dead)
    assert values(telemetry) == [1.0, 3.0]
    rejected = dead_rows(rows.slice(1, 1), "again")
    dead.reject("telemetry", rejected, Position({"TELEMETRY": 2}, {"TELEMETRY": "TELEMETRY@t0"}))
    dead.table.refresh()
    assert dead.table.scan().to_arrow().num_rows == 1


def test_a_catalog_that_is_down_is_waited_for_and_the_rows_land_once(
        catalog: Catalog, tmp_path: Path) -> None:
    telemetry, dead = outputs(catalog)
    ensure_tables(catalog, "sensorlake")
    db = tmp_path / "catalog.db"
    saved = tmp_path / "catalog.saved"
    shutil.copy(db, saved)
    db.write_bytes(b"this is not a database" * 100)  # the catalog is unreadable from now on
    attempts = []

    def sleep(seconds: float) -> None:
        attempts.append(seconds)
        if len(attempts) == 5:
            shutil.copy(saved, db)  # the catalog comes back

    metrics = WriterMetrics()
    committer = Committer(metrics, sleep=sleep)
    batch = decode({"v": 1}, {"v": 2})
    telemetry.add(batch)
    done = committer.commit(telemetry, telemetry.seal(), batch.through, Position(), dead)
    assert len(attempts) >= 5
    assert dict(done.seqs) == {"TELEMETRY": 2}
    assert values(telemetry) == [1.0, 2.0]
    dead.table.refresh()
    assert dead.table.scan().to_arrow().num_rows == 0  # nothing was taken for a poison row
    assert committer.health["telemetry"].reason is None  # healthy again once it landed
    text = metrics.render().decode()
    assert 'sensorlake_commit_failures_total{kind="terminal"}' in text


def test_while_a_write_fails_the_output_reports_why_and_since_when(catalog: Catalog,
                                                                   tmp_path: Path) -> None:
    telemetry, dead = outputs(catalog)
    ensure_tables(catalog, "sensorlake")
    db = tmp_path / "catalog.db"
    saved = tmp_path / "catalog.saved"
    shutil.copy(db, saved)
    db.write_bytes(b"garbage" * 100)
    seen: list[tuple[str | None, float | None]] = []
    committer: Committer

    def sleep(seconds: float) -> None:
        health = committer.health["telemetry"]
        seen.append((health.reason, health.since))
        if len(seen) == 2:
            shutil.copy(saved, db)

    committer = Committer(WriterMetrics(), sleep=sleep)
    batch = decode({"v": 1})
    telemetry.add(batch)
    committer.commit(telemetry, telemetry.seal(), batch.through, Position(), dead)
    reason, since = seen[0]
    assert reason is not None
    assert reason.startswith("telemetry: ")
    assert since is not None
    assert seen[1][1] == since  # the same run of failures


def test_a_table_written_by_an_earlier_version_resumes_where_it_stood(catalog: Catalog) -> None:
    table = ensure_tables(catalog, "sensorlake")["telemetry"]
    rows = decode({"v": 1}).readings.drop_columns(["stream"])
    with table.transaction() as tx:
        with tx.update_schema() as update:
            update.union_by_name(rows.schema)
        tx.append(rows, snapshot_properties={SEQ_PROPERTY: "42",
                                             STREAM_PROPERTY: "TELEMETRY@2026-01-01"})
    assert read_position(catalog.load_table(("sensorlake", "telemetry"))) == Position(
        {"TELEMETRY": 42}, {"TELEMETRY": "TELEMETRY@2026-01-01"})
