"""A burst of QoS 1 readings faster than the stream stores them: every acknowledged one lands."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest

from tests.conftest import Sensorlake

PUBLISHERS = 4
PER_PUBLISHER = 100_000


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="needs mosquitto-clients")
def test_a_burst_of_qos1_readings_loses_none(tmp_path: Path) -> None:
    """400,000 QoS 1 readings from four C publishers outrun the stream's disk writes on two
    cores; with nats-server's default ingest queue tens of thousands were acknowledged, then
    dropped. The readings are captured under the default "any topic", the costliest path."""
    lake = Sensorlake(tmp_path / "data", **{"SENSORLAKE_LOG__LEVEL": "warning"}).start()
    procs = []
    try:
        for i in range(PUBLISHERS):
            lines = b"".join(orjson.dumps({"n": n, "v": 1.5}) + b"\n"
                             for n in range(i * PER_PUBLISHER, (i + 1) * PER_PUBLISHER))
            proc = subprocess.Popen(
                ["mosquitto_pub", "-p", str(lake.mqtt_port), "-q", "1", "-M", "1000",
                 "-t", f"burst/gh-{i}/telemetry", "-l"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            )
            assert proc.stdin is not None
            # stdin stays open until the end: at end of input mosquitto_pub 2.0 disconnects
            # without sending what it still has queued.
            threading.Thread(target=proc.stdin.write, args=(lines,), daemon=True).start()
            procs.append(proc)
        total = PUBLISHERS * PER_PUBLISHER
        where = "FROM telemetry WHERE topic LIKE 'burst/%'"
        deadline = time.monotonic() + 150
        while lake.rows(f"SELECT count(*) {where}")[0][0] < total:
            assert time.monotonic() < deadline, lake.rows(f"SELECT count(*) {where}")
            time.sleep(2)
        assert lake.rows(f"SELECT count(*), count(DISTINCT n) {where}") == [[total, total]]
        assert "Dropping messages" not in (lake.data_dir / "nats.log").read_text()
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(30)
        lake.stop()
