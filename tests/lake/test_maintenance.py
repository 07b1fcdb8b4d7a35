"""Maintenance on real Iceberg tables written by the pipeline's own outputs: compaction keeps every
row exactly once (also while the writer appends), expiry never moves the position, orphan removal
spares what is referenced or young, retention drops exactly the old day partitions."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from pyiceberg.catalog import Catalog

from sensorlake.config import LakeConfig
from sensorlake.lake.maintenance import Maintenance, last_reports
from sensorlake.lake.outputs import TableOutput
from sensorlake.lake.tables import SEQ_PROPERTY, STREAM_PROPERTY, read_position
from sensorlake.pipeline.commit import dead_rows
from sensorlake.stream.partitions import Position
from tests.pipeline.test_commit import catalog, decode, outputs  # noqa: F401 (fixture)

NAMESPACE = "sensorlake"
DEVICES = ("gh-03", "gh-01", "gh-02")


def settings(**overrides: Any) -> LakeConfig:
    base: dict[str, Any] = {"compact_min_files": 5, "target_file_mb": 8, "orphan_grace": 60}
    base.update(overrides)
    return LakeConfig(**base)


def commit(output: TableOutput, first: int, count: int, ts: datetime | None = None) -> None:
    """`count` readings (seq first …) in one commit, as the worker makes them."""
    stamp = (ts or datetime.now(UTC)).isoformat()
    batch = decode(*({"device_id": DEVICES[(first + i) % 3], "ts": stamp, "n": first + i,
                      "v": float(first + i)} for i in range(count)), first=first)
    output.add(batch)
    output.write(output.seal(), batch.through)


def rows(output: TableOutput) -> list[int]:
    output.table.refresh()
    return sorted(output.table.scan(selected_fields=("n",)).to_arrow()["n"].to_pylist())


def data_files(output: TableOutput) -> list[str]:
    output.table.refresh()
    return [t.file.file_path for t in output.table.scan().plan_files()]


def test_compaction_rewrites_small_files_into_one_sorted_file_and_keeps_every_row(
        catalog: Catalog) -> None:  # noqa: F811
    telemetry, _ = outputs(catalog)
    for k in range(12):
        commit(telemetry, 1 + k * 10, 10)
    before = read_position(telemetry.table)
    assert len(data_files(telemetry)) == 12

    report = Maintenance(catalog, NAMESPACE, settings()).run_table("telemetry")

    assert (report.compacted_files, report.written_files) == (12, 1)
    assert rows(telemetry) == list(range(1, 121))
    files = data_files(telemetry)
    assert len(files) == 1
    # Sorted by device, then time, as the table's sort order says (pyiceberg does not).
    got = duckdb.sql(f"SELECT device_id FROM read_parquet('{files[0]}')").fetchall()
    assert [d for (d,) in got] == sorted(d for (d,) in got)
    telemetry.table.refresh()
    assert read_position(telemetry.table) == before
    summary = telemetry.table.current_snapshot().summary  # type: ignore[union-attr]
    assert summary is not None
    assert summary["sensorlake.operation"] == "compaction"


def test_an_open_partition_waits_for_compact_min_files_a_closed_one_does_not(
        catalog: Catalog) -> None:  # noqa: F811
    telemetry, _ = outputs(catalog)
    for k in range(4):  # today: under compact_min_files (5)
        commit(telemetry, 1 + k * 10, 10)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    for k in range(2):
        commit(telemetry, 100 + k * 10, 10, ts=yesterday)

    report = Maintenance(catalog, NAMESPACE, settings()).run_table("telemetry")

    assert report.compacted_files == 2
    assert report.compacted_partitions == [f"ts_day={yesterday.date().isoformat()}"]
    assert len(data_files(telemetry)) == 5
    assert len(rows(telemetry)) == 60


def test_compaction_and_appends_at_the_same_time_lose_and_double_nothing(
        catalog: Catalog) -> None:  # noqa: F811
    telemetry, _ = outputs(catalog)
    maintenance = Maintenance(catalog, NAMESPACE, settings(compact_min_files=3))
    done = threading.Event()
    runs: list[int] = []
    errors: list[BaseException] = []

    def maintain() -> None:
        try:
            while not done.is_set():
                runs.append(maintenance.run_table("telemetry").compacted_files)
        except BaseException as exc:
            errors.append(exc)

    commit(telemetry, 1, 5)  # the output creates the table
    thread = threading.Thread(target=maintain)
    thread.start()
    try:
        for k in range(1, 60):
            commit(telemetry, 1 + k * 5, 5)
    finally:
        done.set()
        thread.join(60)
    assert not errors, errors
    assert sum(runs) > 0, "no compaction ran while the writer appended"
    assert rows(telemetry) == list(range(1, 301))
    telemetry.table.refresh()
    assert read_position(telemetry.table).seqs["TELEMETRY"] == 300


def test_expiry_keeps_the_position_and_the_current_snapshot(catalog: Catalog) -> None:  # noqa: F811
    telemetry, _ = outputs(catalog)
    for k in range(6):
        commit(telemetry, 1 + k * 10, 10)
    position = read_position(telemetry.table)
    later = time.time() + 2 * 3600  # two hours on: every snapshot is past keep_snapshots_hours

    report = Maintenance(catalog, NAMESPACE, settings(compact_min_files=100),
                         now=lambda: later).run_table("telemetry")

    # Two hours on may be past midnight: the readings' day has closed, and is compacted first
    # (one snapshot more, to expire as well).
    assert report.expired_snapshots == 5 + (1 if report.compacted_files else 0)
    telemetry.table.refresh()
    assert len(telemetry.table.metadata.snapshots) == 1
    assert read_position(telemetry.table) == position
    assert rows(telemetry) == list(range(1, 61))
    # The writer resumes where it was: nothing re-appended, the next seq continues.
    commit(telemetry, 61, 10)
    assert rows(telemetry) == list(range(1, 71))


def test_orphans_go_once_old_referenced_and_young_files_stay(
        catalog: Catalog, tmp_path: Path) -> None:  # noqa: F811
    telemetry, _ = outputs(catalog)
    for k in range(8):
        commit(telemetry, 1 + k * 10, 10)
    location = Path(telemetry.table.location().removeprefix("file://"))
    old_stray = location / "data" / "from-a-crashed-commit.parquet"
    young_stray = location / "data" / "from-a-commit-in-flight.parquet"
    for stray in (old_stray, young_stray):
        stray.write_bytes(b"PAR1")
    an_hour_ago = time.time() - 3600
    os.utime(old_stray, (an_hour_ago, an_hour_ago))
    maintenance = Maintenance(catalog, NAMESPACE, settings(compact_min_files=3))

    report = maintenance.run_table("telemetry")

    # Nothing is expired yet (keep_snapshots_hours is 1): only the stray left by a crash is
    # both unreferenced and older than orphan_grace.
    assert report.compacted_files == 8
    assert not old_stray.exists()
    assert young_stray.exists()
    assert rows(telemetry) == list(range(1, 81))
    # A second reader over the current file list sees the same rows.
    listing = ", ".join(f"'{p.removeprefix('file://')}'" for p in data_files(telemetry))
    (count, total), = duckdb.sql(
        f"SELECT count(*), sum(n) FROM read_parquet([{listing}], union_by_name=true)").fetchall()
    assert (count, total) == (80, sum(range(1, 81)))

    # Past keep_snapshots_hours and orphan_grace, the replaced files go too.
    much_later = time.time() + 3 * 3600
    replaced = Maintenance(catalog, NAMESPACE, settings(), now=lambda: much_later
                           ).run_table("telemetry")
    assert replaced.removed_orphans >= 8  # the 8 small files (and their manifests)
    parquet = {str(p) for p in location.glob("data/**/*.parquet")}
    current = {p.removeprefix("file://") for p in data_files(telemetry)}
    assert parquet == current  # 3 h on, the stray of the commit "in flight" is old too
    assert rows(telemetry) == list(range(1, 81))


def test_retention_deletes_exactly_the_day_partitions_past_it(catalog: Catalog) -> None:  # noqa: F811
    telemetry, _ = outputs(catalog)
    now = datetime.now(UTC)
    commit(telemetry, 1, 10, ts=now - timedelta(days=40))
    commit(telemetry, 11, 10, ts=now - timedelta(days=31))
    commit(telemetry, 21, 10, ts=now - timedelta(days=29))
    commit(telemetry, 31, 10, ts=now)
    position = read_position(telemetry.table)

    report = Maintenance(catalog, NAMESPACE, settings(retention_days={"telemetry": 30})
                         ).run_table("telemetry")

    assert report.deleted_partitions == sorted(
        f"ts_day={(now - timedelta(days=d)).date().isoformat()}" for d in (40, 31))
    assert rows(telemetry) == list(range(21, 41))
    telemetry.table.refresh()
    assert read_position(telemetry.table) == position


def test_dry_run_changes_nothing(catalog: Catalog) -> None:  # noqa: F811
    telemetry, _ = outputs(catalog)
    for k in range(7):
        commit(telemetry, 1 + k * 10, 10)
    metadata = telemetry.table.metadata_location

    report = Maintenance(catalog, NAMESPACE, settings(), now=lambda: time.time() + 7200
                         ).run_table("telemetry", dry_run=True)

    assert (report.compacted_files, report.expired_snapshots) == (7, 6)
    telemetry.table.refresh()
    assert telemetry.table.metadata_location == metadata
    assert len(data_files(telemetry)) == 7


def test_the_last_run_is_recorded_for_describe(catalog: Catalog, tmp_path: Path) -> None:  # noqa: F811
    telemetry, _ = outputs(catalog)
    for k in range(6):
        commit(telemetry, 1 + k * 10, 10)
    Maintenance(catalog, NAMESPACE, settings(), report_dir=tmp_path).run(["telemetry"])
    last = last_reports(tmp_path)["telemetry"]
    assert (last["compacted_files"], last["files_after"]) == (6, 1)
    assert last["started_at"] > time.time() - 60


def test_a_table_whose_position_is_not_a_property_yet_is_left_alone(
        catalog: Catalog) -> None:  # noqa: F811
    telemetry, _ = outputs(catalog)
    for k in range(6):
        commit(telemetry, 1 + k * 10, 10)
    table = telemetry.table
    with table.transaction() as tx:  # as an earlier version left it: the position in summaries
        tx.remove_properties("sensorlake.position")
        tx.append(table.scan(limit=1).to_arrow(), snapshot_properties={
            SEQ_PROPERTY: "60", STREAM_PROPERTY: "TELEMETRY@t0"})
    report = Maintenance(catalog, NAMESPACE, settings()).run_table("telemetry")
    assert report.skipped
    assert report.compacted_files == 0
    assert len(data_files(telemetry)) == 7


def test_a_table_with_no_position_of_its_own_is_maintained(catalog: Catalog) -> None:  # noqa: F811
    """dead_letter may hold only what other outputs set apart (positions under their keys)."""
    _, dead = outputs(catalog)
    for k in range(6):
        rows_ = dead_rows(decode({"n": k}, first=k + 1).readings, "could not be stored")
        dead.reject("telemetry", rows_, Position({"TELEMETRY": k + 1},
                                                 {"TELEMETRY": "TELEMETRY@t0"}))
    report = Maintenance(catalog, NAMESPACE, settings()).run_table("dead_letter")
    assert not report.skipped
    assert (report.compacted_files, report.files_after) == (6, 1)


def test_a_data_dir_with_a_space_keeps_every_referenced_file(tmp_path: Path) -> None:
    """File URIs are percent-encoded and directory listings are not: every file must still be
    recognised as referenced."""
    from pyiceberg.catalog import load_catalog

    where = tmp_path / "farm data" / "wh"
    where.mkdir(parents=True)
    spaced = load_catalog("sensorlake", type="sql", uri=f"sqlite:///{tmp_path / 'c.db'}",
                          warehouse=f"file://{where}")  # as Config.warehouse makes it
    telemetry, _ = outputs(spaced)
    for k in range(3):
        commit(telemetry, 1 + k * 10, 10)
    later = time.time() + 3 * 3600  # every file is far older than orphan_grace
    report = Maintenance(spaced, NAMESPACE, settings(compact_min_files=100),
                         now=lambda: later).run_table("telemetry")
    assert report.removed_orphans > 0  # the expired snapshots' manifest lists
    assert rows(telemetry) == list(range(1, 31))
    for path in data_files(telemetry):
        assert Path(path.removeprefix("file://")).exists()


def test_a_data_dir_with_a_space_is_written_and_queried_in_place(tmp_path: Path) -> None:
    from sensorlake.config import Config
    from sensorlake.lake.catalog import open_catalog
    from sensorlake.query.engine import QueryEngine

    config = Config(data_dir=tmp_path / "farm data")
    config.data_dir.mkdir()
    telemetry, _ = outputs(open_catalog(config))
    commit(telemetry, 1, 10)
    assert not (tmp_path / "farm%20data").exists()
    result = QueryEngine(config).execute("SELECT count(*), sum(n) FROM telemetry")
    assert result.rows == [(10, 55)]


def test_max_snapshots_caps_the_count_but_spares_what_a_running_query_may_read(
        catalog: Catalog) -> None:  # noqa: F811
    telemetry, _ = outputs(catalog)
    for k in range(30):
        commit(telemetry, 1 + k, 1)
    capped = settings(compact_min_files=1000, max_snapshots=10)

    # Just superseded: a query planned on any of them may still be running.
    now = Maintenance(catalog, NAMESPACE, capped).run_table("telemetry")
    assert now.expired_snapshots == 0

    later = time.time() + 120  # two minutes on, every one settled for longer than a minute
    report = Maintenance(catalog, NAMESPACE, capped, now=lambda: later).run_table("telemetry")
    assert (report.expired_snapshots, report.snapshots_after) == (20, 10)
    assert rows(telemetry) == list(range(1, 31))


def test_compacted_files_are_delta_encoded_and_read_the_same_by_a_second_reader(
        catalog: Catalog, tmp_path: Path) -> None:  # noqa: F811
    from sensorlake.config import Config
    from sensorlake.query.engine import QueryEngine

    telemetry, _ = outputs(catalog)
    for k in range(6):
        stamp = datetime.now(UTC).isoformat()
        batch = decode(*({"device_id": DEVICES[i % 3], "ts": stamp, "n": 1 + k * 10 + i,
                          "v": (k * 10 + i) / 10, "probe": {"depth": i, "kind": f"k{i % 2}"}}
                         for i in range(10)), first=1 + k * 10)
        telemetry.add(batch)
        telemetry.write(telemetry.seal(), batch.through)
    Maintenance(catalog, NAMESPACE, settings(compact_min_files=3)).run_table("telemetry")

    (path,) = data_files(telemetry)
    meta = duckdb.sql(f"SELECT path_in_schema, encodings FROM parquet_metadata('{path}')"
                      ).fetchall()
    encodings = dict(meta)
    for column in ("ts", "received_at", "seq"):
        assert "DELTA_BINARY_PACKED" in encodings[column], (column, encodings[column])
    assert "RLE_DICTIONARY" in encodings["device_id"]
    # pyiceberg's own reader and sensorlake's engine (DuckDB over the file list) agree.
    telemetry.table.refresh()
    arrow = telemetry.table.scan(selected_fields=("n", "v", "device_id", "probe")).to_arrow()
    config = Config(data_dir=tmp_path, lake=LakeConfig(warehouse=(tmp_path / "wh").as_uri()))
    engine = QueryEngine(config, catalog)
    result = engine.execute("SELECT count(*), sum(n), sum(v), count(DISTINCT device_id), "
                            "sum(probe.depth) FROM telemetry")
    assert result.rows == [(60, sum(arrow["n"].to_pylist()), sum(arrow["v"].to_pylist()), 3,
                            sum(p["depth"] for p in arrow["probe"].to_pylist()))]
    # The statistics pyiceberg keeps let a time-bounded scan still find the file.
    assert len(list(telemetry.table.scan(
        row_filter=f"ts >= '{(datetime.now(UTC) - timedelta(hours=1)).isoformat()}'"
    ).plan_files())) == 1


def test_compacted_row_groups_are_small_enough_to_skip_other_devices(
        catalog: Catalog) -> None:  # noqa: F811
    """One device's day at 1/s is 86,400 rows: a row group of a million would make a reader
    decode every other device's readings beside it."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyiceberg.typedef import Record

    from sensorlake.lake.parquet import ROW_GROUP_ROWS, write_data_file

    telemetry, _ = outputs(catalog)
    commit(telemetry, 1, 3)
    table = telemetry.table
    table.refresh()
    (existing,) = (t.file for t in table.scan().plan_files())
    sample = table.scan().to_arrow()
    rows = pa.concat_tables([sample] * 100_000)  # 300,000 rows
    assert ROW_GROUP_ROWS <= 2 * 86_400
    for limit, groups in ((None, 3), ("50000", 6)):
        if limit is not None:
            with table.transaction() as tx:
                tx.set_properties({"write.parquet.row-group-limit": limit})
        written = write_data_file(table, rows, existing.spec_id, Record(*existing.partition))
        path = written.file_path.removeprefix("file://")
        assert pq.ParquetFile(path).metadata.num_row_groups == groups, limit
        assert written.record_count == rows.num_rows
