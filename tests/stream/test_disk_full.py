"""A full disk under the stream: ingest says so at once, /healthz reports it, nothing acknowledged
is lost, and ingest resumes by itself once there is room again.

Measured before: with the data dir on a small tmpfs, each HTTP ingest past the full point waited
10 s and answered 503 `the stream did not acknowledge the data: ` (no reason), and /healthz kept
saying "ok".
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import Sensorlake

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _batch(start: int) -> bytes:
    return b"\n".join(orjson.dumps({"n": n, "pad": "x" * 200}) for n in range(start, start + 2000))


def _send(lake: Sensorlake, start: int) -> httpx.Response:
    return lake.ingest("farm/full-1/t", _batch(start), "application/x-ndjson")


def test_a_full_disk_is_named_at_once_and_ingest_resumes_when_there_is_room(
        small_disk: Path) -> None:
    lake = Sensorlake(small_disk / "data", flush_interval=0.5)
    lake.start()
    try:
        acked = 0
        for _ in range(5):
            assert _send(lake, acked).status_code == 200
            acked += 2000
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 10 * 1024 * 1024))
        time.sleep(1.5)  # the disk is looked at every second
        started = time.monotonic()
        reply = _send(lake, acked)
        assert time.monotonic() - started < 1.0
        assert reply.status_code == 507
        error = reply.json()
        assert f"the disk holding the stream ({lake.data_dir / 'nats'}) is full" in error["error"]
        assert "MB free of 64.0 MB" in error["error"]
        assert "resumes by itself" in error["hint"]
        health = httpx.get(f"{lake.url}/healthz").json()
        assert health["status"] == "degraded"
        assert "is full" in health["problems"][0]["problem"]
        assert health["problems"][0]["since"]
        filler.unlink()
        deadline = time.monotonic() + 15
        while _send(lake, acked).status_code != 200:
            assert time.monotonic() < deadline, "ingest did not resume once there was room"
            time.sleep(0.5)
        acked += 2000
        sql = "SELECT count(*), count(DISTINCT n), max(n) FROM telemetry WHERE n IS NOT NULL"
        deadline = time.monotonic() + 20
        while True:
            result = lake.query(sql)
            if result["uncommitted_rows"] == 0 and result["rows"][0][0] == acked:
                break
            assert time.monotonic() < deadline, result
            time.sleep(0.3)
        assert result["rows"] == [[acked, acked, acked - 1]]
        assert httpx.get(f"{lake.url}/healthz").json()["status"] == "ok"
    finally:
        if lake.proc is not None:
            lake.stop()
