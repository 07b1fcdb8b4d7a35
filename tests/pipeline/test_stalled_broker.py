"""A frozen broker (a VM pause, a disk stall) must not stall the lake for good.

Measured before: while `sensorlake agent` published 10 readings/s, nats-server was frozen for
8 s (SIGSTOP, SIGCONT). The writer's flush of its ack timed out, the late PONG then killed the
NATS client's read loop, and nothing was committed ever again.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SENSORLAKE, Sensorlake

pytestmark = pytest.mark.slow

COUNTER = ("n=$(cat {dir}/n 2>/dev/null || echo 0); echo $((n+1)) > {dir}/n; "
           'echo "{{\\"n\\": $n}}"')


def _committed(lake: Sensorlake) -> tuple[int, int]:
    result = lake.query("SELECT count(*), count(DISTINCT n) FROM telemetry WHERE n IS NOT NULL")
    count, distinct = result["rows"][0]
    return (int(count) if result["uncommitted_rows"] == 0 else -1), int(distinct)


def test_a_frozen_nats_server_holds_the_lake_up_for_seconds_not_for_good(
        fresh: Sensorlake, tmp_path: Path) -> None:
    fresh.flush_interval = 1.0
    fresh.start()
    agent = subprocess.Popen(
        [*SENSORLAKE, "agent", "--source", "command", "--interval", "0.1",
         "--command", f"sh -c '{COUNTER.format(dir=tmp_path)}'",
         "--port", str(fresh.mqtt_port), "--queue-dir", str(tmp_path / "queue"),
         "--topic", "agent/pi-01/telemetry"],
        env=fresh.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(3)
        nats = int((fresh.data_dir / "nats.pid").read_text())
        os.kill(nats, signal.SIGSTOP)
        time.sleep(8)
        os.kill(nats, signal.SIGCONT)
        thawed = time.monotonic()
        time.sleep(3)
    finally:
        agent.send_signal(signal.SIGINT)
        err, _ = agent.communicate(timeout=60)
    assert agent.returncode == 0, err.decode()
    summary = re.search(r"([\d,]+) published", err.decode())
    assert summary is not None, err.decode()
    published = int(summary.group(1).replace(",", ""))  # PUBACKed, as the agent counts
    assert published > 80
    deadline = thawed + 20
    while _committed(fresh) != (published, published):
        assert time.monotonic() < deadline, (
            f"{_committed(fresh)} committed of {published}, 20 s after the thaw:\n"
            f"{fresh.log()[-3000:]}")
        time.sleep(0.2)
    health = httpx.get(f"{fresh.url}/healthz").json()
    assert health["status"] == "ok", health
    print(f"\nall {published} readings committed {time.monotonic() - thawed:.1f} s after the "
          f"thaw; agent: {err.decode().strip().splitlines()[-1]}", file=sys.stderr)
