"""`sensorlake agent`: real sources, the store-and-forward queue, and a real broker outage.

The process-level tests run the agent as a subprocess against a real `sensorlake up` (or
against a port where nothing listens) and look only at what reaches the lake and what the
queue file holds.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from sensorlake.agent.queue import ReadingQueue
from sensorlake.agent.sources import SourceFailed, SourceKind, open_source
from sensorlake.agent.sources.command import parse_readings
from sensorlake.errors import AgentError
from tests.conftest import SENSORLAKE, Sensorlake, free_port

COUNTER = """\
import json, pathlib, sys
path = pathlib.Path(sys.argv[1])
n = int(path.read_text()) + 1 if path.exists() else 1
path.write_text(str(n))
print(json.dumps({"n": n, "label": "counter"}))
"""


def counter_command(tmp_path: Path) -> str:
    """A --command printing {"n": 1}, {"n": 2}, … on successive runs."""
    script = tmp_path / "counter.py"
    script.write_text(COUNTER)
    return f"{sys.executable} {script} {tmp_path / 'counter.txt'}"


def agent(*args: str) -> list[str]:
    return [*SENSORLAKE, "agent", *args]


def run_agent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(agent(*args), capture_output=True, text=True, timeout=timeout,
                          check=False)


# --- sources and queue, in-process -----------------------------------------------------------


def test_the_system_source_reads_plausible_cpu_ram_and_disk_figures() -> None:
    source = open_source(SourceKind.system)
    time.sleep(0.1)  # CPU use is measured between two calls
    [reading] = source.read()
    assert 0 <= reading["cpu_percent"] <= 100
    assert 0 < reading["ram_percent"] <= 100
    assert 0 < reading["disk_percent"] <= 100
    assert reading["ram_used_mb"] > 0
    assert reading["disk_free_gb"] >= 0
    assert reading["load_1m"] >= 0
    if "cpu_temp_c" in reading:  # only where the platform exposes a sensor
        assert -40 < reading["cpu_temp_c"] < 130
    orjson.dumps(reading)


@pytest.mark.skipif(importlib.util.find_spec("sense_hat") is not None,
                    reason="the Sense HAT library is installed here")
def test_the_sensehat_source_without_its_library_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="sense_hat") as caught:
        open_source(SourceKind.sensehat)
    assert "python3-sense-hat" in str(caught.value)
    assert "pip install sense-hat" in str(caught.value)
    done = run_agent("--source", "sensehat", "--count", "1", "--queue-dir", str(tmp_path / "q"))
    assert done.returncode == 1
    assert "sense-hat" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_command_source_takes_an_object_or_an_array_and_rejects_the_rest(
    tmp_path: Path,
) -> None:
    assert parse_readings(b'{"t": 1}\n') == [{"t": 1}]
    assert parse_readings(b'[{"t": 1}, {"t": 2}]') == [{"t": 1}, {"t": 2}]
    for bad in (b"", b"21.5", b"[1, 2]", b"[]", b"not json"):
        with pytest.raises(SourceFailed):
            parse_readings(bad)
    source = open_source(SourceKind.command, counter_command(tmp_path))
    assert [source.read(), source.read()] == [[{"n": 1, "label": "counter"}],
                                              [{"n": 2, "label": "counter"}]]
    with pytest.raises(SourceFailed, match="exited with 3"):
        open_source(SourceKind.command, f"{sys.executable} -c 'raise SystemExit(3)'").read()
    with pytest.raises(AgentError, match="cannot run"):
        open_source(SourceKind.command, "no-such-program-here").read()
    with pytest.raises(AgentError, match="needs --command"):
        open_source(SourceKind.command, None)


def test_the_queue_keeps_the_newest_in_order_and_counts_what_it_dropped(tmp_path: Path) -> None:
    store = ReadingQueue(tmp_path, max_size=5)
    assert store.put([("t", b"%d" % i) for i in range(3)]) == 0
    assert sum(store.put([("t", b"%d" % i)]) for i in range(3, 12)) == 7
    assert [q.payload for q in store.peek(0, 100)] == [b"%d" % i for i in range(7, 12)]
    first_two = store.peek(0, 2)
    store.remove([q.id for q in first_two])
    store.close()
    # Durable: a new process (here, a new handle) sees the same queue and the same counter.
    reopened = ReadingQueue(tmp_path, max_size=5)
    assert [q.payload for q in reopened.peek(0, 100)] == [b"9", b"10", b"11"]
    assert reopened.dropped == 7
    assert reopened.peek(first_two[-1].id + 1, 1)[0].payload == b"10"
    reopened.put([("t", b"12")])
    assert reopened.peek(0, 100)[-1].id > first_two[-1].id  # ids never go back
    reopened.close()


# --- whole processes -------------------------------------------------------------------------


@pytest.mark.slow
def test_readings_taken_during_a_broker_outage_all_arrive_in_order_none_lost(
    fresh: Sensorlake, tmp_path: Path,
) -> None:
    lake = fresh.start()
    topic = f"agent/{uuid.uuid4().hex[:10]}/telemetry"
    total = 80
    proc = subprocess.Popen(
        agent("--source", "command", "--command", counter_command(tmp_path),
              "--interval", "0.1", "--count", str(total), "--port", str(lake.mqtt_port),
              "--topic", topic, "--queue-dir", str(tmp_path / "queue")),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        arrived = f"SELECT seq FROM telemetry WHERE topic = '{topic}'"  # before n is a column
        assert len(lake.wait_rows(arrived, 5, timeout=20)) >= 5, "the agent never published"
        # The broker hangs (readings in flight get no PUBACK), then dies and is restarted
        # by `up`: a real outage of several seconds, half-open connection included.
        nats = int((lake.data_dir / "nats.pid").read_text())
        os.kill(nats, signal.SIGSTOP)
        time.sleep(3)
        os.kill(nats, signal.SIGKILL)
        out, errors = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, errors
    assert f"{total} readings taken, {total} published, 0 queued, 0 dropped" in out
    assert "lost mqtt://" in errors  # it did see the outage, and queued meanwhile
    backlog = re.search(r"again; sending (\d+) queued readings", errors)
    assert backlog is not None, errors
    assert int(backlog[1]) > 0
    sql = f"SELECT CAST(n AS INTEGER) FROM telemetry WHERE topic = '{topic}' ORDER BY seq"
    values = [r[0] for r in lake.wait_rows(sql, total, timeout=30)]
    # None lost, in order. Delivery is at least once: a reading stored just before the broker
    # froze, whose PUBACK never came, is sent again (docs/agent.md), so a repeat may follow.
    assert list(dict.fromkeys(values)) == list(range(1, total + 1))
    assert len(values) - total <= 100


@pytest.mark.slow
def test_offline_the_queue_keeps_only_the_newest_and_drains_them_in_order_later(
    lake: Sensorlake, tmp_path: Path,
) -> None:
    queue = str(tmp_path / "queue")
    topic = f"agent/{uuid.uuid4().hex[:10]}/telemetry"
    done = run_agent("--source", "command", "--command", counter_command(tmp_path),
                     "--interval", "0.05", "--count", "12", "--port", str(free_port()),
                     "--topic", topic, "--queue-dir", queue, "--queue-max", "5",
                     "--drain-timeout", "0.5")
    assert done.returncode == 1  # readings were left undelivered, and it says so
    assert "12 readings taken, 0 published, 5 queued, 7 dropped" in done.stdout
    assert "still queued" in done.stderr
    status = orjson.loads(run_agent("--status", "--queue-dir", queue, "-f", "json").stdout)
    assert (status["queued"], status["dropped"]) == (5, 7)

    done = run_agent("--count", "0", "--port", str(lake.mqtt_port), "--queue-dir", queue)
    assert done.returncode == 0, done.stderr
    assert "0 readings taken, 5 published, 0 queued, 0 dropped (7 dropped in all)" in done.stdout
    rows = lake.wait_rows(
        f"SELECT CAST(n AS INTEGER) FROM telemetry WHERE topic = '{topic}' ORDER BY seq", 5)
    assert [r[0] for r in rows] == [8, 9, 10, 11, 12]


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_what_was_not_sent(tmp_path: Path) -> None:
    queue = tmp_path / "queue"
    proc = subprocess.Popen(
        agent("--interval", "0.1", "--port", str(free_port()), "--queue-dir", str(queue)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (queue / "queue.db").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, errors = proc.communicate(timeout=15)
    assert proc.returncode == 0, errors
    assert "Traceback" not in errors
    store = ReadingQueue(queue, 100)
    queued = len(store)
    store.close()
    assert queued > 0
    assert f"0 published, {queued} queued, 0 dropped" in out


@pytest.mark.slow
def test_a_registered_device_publishes_with_its_bundle_or_its_token(tmp_path: Path) -> None:
    lake = Sensorlake(tmp_path / "data")
    lake.cli("devices", "register", "pi-01", "pi-02")
    lake.start()
    try:
        bundle = lake.data_dir / "bundles" / "pi-01"
        done = run_agent("--bundle", str(bundle), "--host", "127.0.0.1",
                         "--port", str(lake.mqtts_port), "--count", "2", "--interval", "0.1",
                         "--queue-dir", str(tmp_path / "q1"))
        assert done.returncode == 0, done.stderr
        assert "2 readings taken, 2 published" in done.stdout
        token = lake.cli("devices", "token", "pi-02").stdout.splitlines()[1].strip()
        deadline = time.monotonic() + 10
        attempt = 0
        while True:  # `up` takes up to a second to learn of the new token
            # A queue of its own each time: a refused attempt keeps its reading queued, and the
            # next run from the same queue would rightly forward it as well.
            attempt += 1
            done = run_agent("--username", "pi-02", "--token", token, "--count", "1",
                             "--port", str(lake.mqtt_port),
                             "--queue-dir", str(tmp_path / f"q2-{attempt}"))
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert done.returncode == 0, done.stderr
        done = run_agent("--username", "pi-02", "--token", token + "x", "--count", "1",
                         "--port", str(lake.mqtt_port), "--queue-dir", str(tmp_path / "q3"))
        assert done.returncode == 1
        assert "refused the agent: Not authorized" in done.stderr
        assert "sensorlake devices token" in done.stderr
        rows = lake.wait_rows("SELECT device_id, topic, cpu_percent >= 0 FROM telemetry "
                              "ORDER BY device_id, ts", 3)
        assert rows == [["pi-01", "farm/pi-01/telemetry", True]] * 2 + [
            ["pi-02", "agent/pi-02/telemetry", True]]
    finally:
        lake.stop()
