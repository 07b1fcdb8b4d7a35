"""A rollup write that fails after its checkpoint was saved — the catalog unreadable between the
checkpoint and the table commit — is retried without taking the step twice: the closed buckets
land once, with the counts the readings make (real Iceberg tables, a SQLite catalog)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog import load_catalog

from sensorlake.metrics import WriterMetrics
from sensorlake.pipeline.checkpoint import CheckpointStore
from sensorlake.pipeline.commit import Committer
from sensorlake.rollup.buckets import MINUTE
from sensorlake.rollup.output import EMIT_EVERY_S, RollupOutput
from sensorlake.stream.partitions import Position


def readings(start_us: int, count: int, first_seq: int) -> pa.Table:
    return pa.table({
        "device_id": ["gh-01"] * count,
        "ts": pa.array([start_us + i * 1_000_000 for i in range(count)],
                       pa.timestamp("us", tz="UTC")),
        "temperature": [20.0 + i % 3 for i in range(count)],
        "seq": list(range(first_seq, first_seq + count)),
        "stream": ["TELEMETRY"] * count,
    })


def test_a_failed_table_commit_after_the_checkpoint_is_retried_once(tmp_path: Path) -> None:
    (tmp_path / "wh").mkdir()
    catalog = load_catalog("sensorlake", type="sql", uri=f"sqlite:///{tmp_path / 'catalog.db'}",
                           warehouse=(tmp_path / "wh").as_uri())
    store = CheckpointStore(f"sqlite:///{tmp_path / 'pipeline.db'}", "sensorlake")
    clock = [time.time()]
    output = RollupOutput(MINUTE, catalog, "sensorlake", store, Position,
                          clock=lambda: clock[0])
    committed = output.load_position()
    minute = int(clock[0] // 60 * 60 - 600) * 1_000_000
    committer = Committer(WriterMetrics(), sleep=lambda _: None)
    committed = committer.commit(output, readings(minute, 180, 1),
                                 Position({"TELEMETRY": 180}, {"TELEMETRY": "TELEMETRY@t0"}),
                                 committed, None)
    assert output.waiting["count"].to_pylist() == [60, 60]  # closed, waiting to be appended
    output.table.refresh()
    assert output.table.scan().to_arrow().num_rows == 0

    db, saved = tmp_path / "catalog.db", tmp_path / "catalog.saved"
    shutil.copy(db, saved)
    db.write_bytes(b"this is not a database" * 100)  # from now on the commit cannot land
    attempts: list[float] = []

    def sleep(seconds: float) -> None:
        attempts.append(seconds)
        if len(attempts) == 4:
            shutil.copy(saved, db)  # the catalog comes back

    committer = Committer(WriterMetrics(), sleep=sleep)
    clock[0] += EMIT_EVERY_S  # the waiting buckets are due with the next window
    committed = committer.commit(output, readings(minute + 180_000_000, 60, 181),
                                 Position({"TELEMETRY": 240}, {"TELEMETRY": "TELEMETRY@t0"}),
                                 committed, None)
    assert len(attempts) >= 4
    assert dict(committed.seqs) == {"TELEMETRY": 240}
    output.table.refresh()
    held = output.table.scan().to_arrow().sort_by("ts")
    # Three minutes closed (the fourth waits for its grace), each counted once, not twice.
    assert held["count"].to_pylist() == [60, 60, 60]
    assert held["sum"].to_pylist() == [1260.0, 1260.0, 1260.0]
    assert output.buckets.open["count"].to_pylist() == [60]
    assert output.waiting.num_rows == 0
