"""Maintenance as users run it: in the background of `up` under live ingest, and `sensorlake
maintain` killed with SIGKILL at random moments — the lake reads the same every time."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from sensorlake.config import Config
from sensorlake.lake.catalog import open_catalog
from tests.conftest import SENSORLAKE, Sensorlake
from tests.lake.test_maintenance import commit, outputs

pytestmark = pytest.mark.slow


def metric(lake: Sensorlake, name: str) -> float:
    text = httpx.get(f"{lake.url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def test_background_compaction_under_live_ingest_keeps_every_reading_once(
        fresh: Sensorlake) -> None:
    fresh.flush_interval = 0.2
    fresh.extra_env.update(SENSORLAKE_LAKE__MAINTENANCE_INTERVAL="1",
                           SENSORLAKE_LAKE__COMPACT_MIN_FILES="3")
    fresh.start()
    acked: list[int] = []
    stop = threading.Event()

    def ingest() -> None:
        n = 0
        while not stop.is_set():
            body = "\n".join(json.dumps({"device_id": f"gh-{i % 4}", "n": n + i, "v": 1.5})
                             for i in range(20))
            reply = fresh.ingest("farm/gh/telemetry", body.encode(), "application/x-ndjson")
            if reply.status_code == 200:
                acked.extend(range(n, n + 20))
            n += 20
            time.sleep(0.05)

    thread = threading.Thread(target=ingest)
    thread.start()
    deadline = time.monotonic() + 60
    try:  # until compaction has rewritten files several times while readings kept coming
        while metric(fresh, "sensorlake_compacted_files_total") < 30:
            assert time.monotonic() < deadline, fresh.log()
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join()

    total = len(acked)
    sql = "SELECT count(*), count(DISTINCT n), sum(n) FROM telemetry"
    deadline = time.monotonic() + 30
    while fresh.query(sql)["uncommitted_rows"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fresh.rows(sql) == [[total, total, sum(acked)]]
    info = json.loads(fresh.cli("describe", "telemetry", "--format", "json").stdout)
    assert info["files"] <= 3 + 2, info  # the open day: at most compact_min_files small ones
    assert info["last_maintenance"] != "never"
    gauge = 'sensorlake_table_data_files{table="telemetry"}'
    deadline = time.monotonic() + 10  # the figures are refreshed after each maintenance run
    while metric(fresh, gauge) != info["files"]:
        assert time.monotonic() < deadline, (metric(fresh, gauge), info["files"])
        time.sleep(0.3)


def test_sigkill_during_maintain_leaves_a_table_that_reads_the_same(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data")
    config.data_dir.mkdir()
    telemetry, _ = outputs(open_catalog(config))
    env = dict(os.environ, SENSORLAKE_LAKE__COMPACT_MIN_FILES="2",
               SENSORLAKE_LAKE__KEEP_SNAPSHOTS_HOURS="0.0001",
               SENSORLAKE_LAKE__MAX_SNAPSHOTS="2", SENSORLAKE_LAKE__ORPHAN_GRACE="10",
               SENSORLAKE_QUERY__TIMEOUT="1")
    maintain = [*SENSORLAKE, "maintain", "--data-dir", str(config.data_dir)]
    rng = random.Random(8)
    written = 0
    for _ in range(4):
        commit(telemetry, written + 1, 25)
        written += 25
    started = time.monotonic()  # one whole run first: the kills below spread over its length
    subprocess.run(maintain, env=env, capture_output=True, timeout=120, check=True)
    whole_run = time.monotonic() - started
    killed = 0
    for cycle in range(12):
        for _ in range(4):
            commit(telemetry, written + 1, 25)
            written += 25
        proc = subprocess.Popen(maintain, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.0) * whole_run)  # past the imports, into every phase
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(30)
        table = open_catalog(config).load_table(("sensorlake", "telemetry"))
        got = table.scan(selected_fields=("n",)).to_arrow()["n"].to_pylist()
        assert sorted(got) == list(range(1, written + 1)), f"cycle {cycle}"
        for task in table.scan().plan_files():
            assert Path(task.file.file_path.removeprefix("file://")).exists(), f"cycle {cycle}"
    assert killed >= 6, f"only {killed} of 12 runs were killed: too few to mean anything"

    done = subprocess.run(maintain, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    table = open_catalog(config).load_table(("sensorlake", "telemetry"))
    got = table.scan(selected_fields=("n",)).to_arrow()["n"].to_pylist()
    assert sorted(got) == list(range(1, written + 1))
