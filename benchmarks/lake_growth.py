"""Lake growth: does a small query, and a commit, cost the same after 10,000 commits as after 100?

A trickle (a few readings per commit, as `lake.flush_interval = 0.1` with 20 readings/s makes) is
committed through the pipeline's own telemetry output; after checkpoints of 100, 1,000 and
10,000 commits the script measures, on the same table:

- query p50: "average of the last 10 minutes by device" through the query engine the API uses,
  each sample right after a commit (a new snapshot, as a dashboard sees it), 5 samples;
- commit time: mean of the last 20 commits;
- data files, snapshots, size of the current metadata file, most small files in one day.

Once with maintenance running in a thread beside the writer (as the worker runs it), once
without, in one run. Time is compressed: 10,000 commits take minutes here, not the 28 hours they
take at the default 10 s interval, so `keep_snapshots_hours` and `orphan_grace` are scaled by
the same factor (as is the minute a replaced snapshot is kept for running queries).
Without maintenance, every commit gets slower: that run stops at --off-commits.

Usage: python benchmarks/lake_growth.py [--commits 10000] [--off-commits 1000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pyiceberg.catalog import Catalog

from sensorlake.config import Config, LakeConfig
from sensorlake.faults import NO_FAULTS
from sensorlake.ingest.identity import IdentityRules
from sensorlake.lake.catalog import open_catalog
from sensorlake.lake.maintenance import SMALL_FRACTION, Maintenance, MiB
from sensorlake.lake.outputs import TableOutput, telemetry_output
from sensorlake.lake.records import Decoder
from sensorlake.lake.tables import TELEMETRY_SCHEMA
from sensorlake.query.engine import QueryEngine
from sensorlake.stream.feed import Delivery, Drained
from sensorlake.stream.partitions import Account, Partition

PARTITION = Partition("TELEMETRY", "TELEMETRY@bench", Account.SERVICE, ("dev.>",),
                      acked=False, subject_prefix="dev")
QUERY = ("SELECT device_id, avg(temperature), count(*) FROM telemetry "
         "WHERE ts > now() - INTERVAL 10 MINUTE GROUP BY device_id")
DEFAULT_FLUSH_S = 10.0
DEFAULT_KEEP_H = 1.0
DEFAULT_GRACE_S = 3600.0


class Trickle:
    """Commits of `per_commit` readings from 10 devices, through the real telemetry output."""

    def __init__(self, output: TableOutput, per_commit: int) -> None:
        self.output = output
        self.per_commit = per_commit
        self.seq = 0
        self.decoder = Decoder(IdentityRules(), TELEMETRY_SCHEMA.as_arrow())
        self.times: list[float] = []

    def commit(self) -> float:
        deliveries = []
        now = time.time()
        for _ in range(self.per_commit):
            self.seq += 1
            body = orjson.dumps({"device_id": f"gh-{self.seq % 10:02d}",
                                 "ts": datetime.fromtimestamp(now, UTC).isoformat(),
                                 "temperature": 20 + (self.seq % 50) / 10,
                                 "humidity": 60.0, "co2": 400 + self.seq % 30})
            deliveries.append(Delivery(self.seq, int(now * 1e9), "dev.farm.gh.telemetry", body,
                                       "", -1))
        batch = self.decoder.decode([(PARTITION, Drained(deliveries, self.seq, len(deliveries)))])
        started = time.perf_counter()
        self.output.add(batch)
        self.output.write(self.output.seal(), batch.through)
        elapsed = time.perf_counter() - started
        self.times.append(elapsed)
        return elapsed


def figures(engine: QueryEngine, trickle: Trickle, lake: LakeConfig) -> dict[str, Any]:
    samples = []
    for _ in range(5):
        trickle.commit()
        started = time.perf_counter()
        engine.execute(QUERY)
        samples.append(time.perf_counter() - started)
    table = trickle.output.table
    table.refresh()
    tasks = list(table.scan().plan_files())
    small: dict[Any, int] = {}
    for task in tasks:
        if task.file.file_size_in_bytes < lake.target_file_mb * MiB * SMALL_FRACTION:
            key = task.file.partition[0]
            small[key] = small.get(key, 0) + 1
    return {
        "query_p50_ms": statistics.median(samples) * 1000,
        "commit_ms": statistics.mean(trickle.times[-20:]) * 1000,
        "files": len(tasks),
        "snapshots": len(table.metadata.snapshots),
        "metadata_kb": len(table.io.new_input(table.metadata_location)) / 1024,
        "most_small_files_per_day": max(small.values(), default=0),
    }


def run(label: str, commits: int, per_commit: int, maintain: bool) -> None:
    data = Path(tempfile.mkdtemp(prefix=f"lake-growth-{label}-"))
    config = Config(data_dir=data)
    catalog: Catalog = open_catalog(config)
    output = telemetry_output(catalog, config.lake.namespace, NO_FAULTS)
    trickle = Trickle(output, per_commit)
    for _ in range(20):  # measure the commit pace, to scale the time-based settings
        trickle.commit()
    scale = statistics.mean(trickle.times) / DEFAULT_FLUSH_S
    lake = config.lake.model_copy(update={
        "keep_snapshots_hours": DEFAULT_KEEP_H * scale,
        "orphan_grace": max(10.0, DEFAULT_GRACE_S * scale),
    })
    engine = QueryEngine(config, open_catalog(config))
    stop = threading.Event()
    runs: list[float] = []
    failures: list[str] = []

    def maintenance_loop() -> None:
        maintenance = Maintenance(open_catalog(config), config.lake.namespace, lake,
                                  min_snapshot_age=60 * scale)
        while not stop.wait(max(0.5, config.lake.maintenance_interval * scale)):
            started = time.perf_counter()
            try:
                maintenance.run()
            except Exception as exc:  # as the worker does: count it, try again next time
                failures.append(repr(exc))
                continue
            runs.append(time.perf_counter() - started)

    thread = threading.Thread(target=maintenance_loop, daemon=True)
    if maintain:
        thread.start()
    if maintain:
        print(f"{label}: keep_snapshots_hours scaled to {lake.keep_snapshots_hours * 3600:.1f} "
              f"s, maintenance every {max(0.5, config.lake.maintenance_interval * scale):.1f} s")
    else:
        print(label)
    print(f"  {'commits':>8} {'query p50':>10} {'commit':>9} {'files':>6} {'snapshots':>9} "
          f"{'metadata':>9} {'small/day':>9}")
    checkpoints = [c for c in (100, 1_000, 10_000) if c <= commits] or [commits]
    started = time.monotonic()
    for checkpoint in checkpoints:
        while len(trickle.times) < checkpoint - 5:
            trickle.commit()
        f = figures(engine, trickle, lake)
        print(f"  {checkpoint:>8,} {f['query_p50_ms']:>8.0f} ms {f['commit_ms']:>6.0f} ms "
              f"{f['files']:>6} {f['snapshots']:>9} {f['metadata_kb']:>6.0f} KB "
              f"{f['most_small_files_per_day']:>9}   ({time.monotonic() - started:.0f} s)",
              flush=True)
    stop.set()
    if maintain:
        thread.join()
        print(f"  maintenance: {len(runs)} runs, p50 "
              f"{statistics.median(runs or [0]) * 1000:.0f} ms, max "
              f"{max(runs or [0]) * 1000:.0f} ms, {len(failures)} failed "
              f"{failures[:1] if failures else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=10_000)
    parser.add_argument("--off-commits", type=int, default=1_000)
    parser.add_argument("--per-commit", type=int, default=2,
                        help="readings per commit (20 readings/s at flush_interval 0.1)")
    parser.add_argument("--only", choices=("on", "off"))
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, "
          f"{platform.platform()}")
    if args.only != "on":
        run("maintenance off", args.off_commits, args.per_commit, maintain=False)
    if args.only != "off":
        run("maintenance on", args.commits, args.per_commit, maintain=True)


if __name__ == "__main__":
    main()
