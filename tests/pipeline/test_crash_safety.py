"""Crash safety: kill every process at random moments, and the writer at every point where the
state changes, while MQTT QoS 1 and HTTP readings keep arriving. Afterwards every reading that got
a PUBACK or a 2xx is in `telemetry` exactly once, and the lake reads clean; device state, the
anomalies table and the rollups hold each reading telemetry holds, once.

MQTT QoS 1 is at least once between a device and the server: a publish whose PUBACK was lost in a
crash is sent again and may be stored twice. Only readings in flight at such a disconnect may
appear twice; HTTP batches are retried with the same Idempotency-Key and may never.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import statistics
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from pyiceberg.catalog import load_catalog

from tests.conftest import Sensorlake
from tests.rollup.checks import check_rollups

pytestmark = pytest.mark.slow

FAULTS = ("before-commit@0.04,before-swap@0.04,schema-evolution@0.3,between-outputs@0.04,"
          "after-commit@0.04,after-checkpoint@0.1")


class MqttLoad:
    """One device publishing QoS 1 at a steady pace, through every outage (paho reconnects)."""

    def __init__(self, port: int, rate: float = 250.0) -> None:
        self.acked: set[int] = set()
        self.maybe_twice: set[int] = set()
        self.sent = 0
        self._inflight: dict[int, int] = {}
        self._early: set[int] = set()
        """PUBACKs that came before publish() returned the message id."""
        self._lock = threading.Lock()
        """Guards the bookkeeping only; never held while calling into paho, whose network
        thread calls back into us with its own locks held."""
        self._stop = threading.Event()
        self._rate = rate
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"crash-{uuid.uuid4().hex[:8]}", clean_session=False)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_publish(self, client: Any, userdata: Any, mid: int, *args: Any) -> None:
        with self._lock:
            n = self._inflight.pop(mid, None)
            if n is None:
                self._early.add(mid)
            else:
                self.acked.add(n)

    def _on_disconnect(self, *args: Any) -> None:
        with self._lock:  # these may be sent again after the reconnect
            self.maybe_twice.update(self._inflight.values())

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            payload: dict[str, Any] = {"n": n, "src": "mqtt"}
            if n % 300 == 0:
                payload[f"m{n // 300}"] = n  # a new column now and then: schema evolution
            info = self.client.publish("crash/dev-m/t", orjson.dumps(payload), qos=1)
            with self._lock:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    self.acked.add(n)
                else:
                    self._inflight[info.mid] = n
            n += 1
            self.sent = n
            time.sleep(1 / self._rate)

    def finish(self, timeout: float = 60.0) -> None:
        self._stop.set()
        self._thread.join()
        deadline = time.monotonic() + timeout
        while self._inflight and time.monotonic() < deadline:
            time.sleep(0.1)
        self.client.disconnect()
        self.client.loop_stop()


class HttpLoad:
    """Batches of readings over HTTP, each retried with its own Idempotency-Key until it is
    acknowledged."""

    def __init__(self, lake: Sensorlake, batch: int = 20, pause: float = 0.05) -> None:
        self.acked: set[int] = set()
        self.tried: set[int] = set()
        self._lake = lake
        self._batch = batch
        self._pause = pause
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = 0
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                ns = list(range(start, start + self._batch))
                body = b"\n".join(orjson.dumps({"n": n, "src": "http"}) for n in ns)
                key = f"crash-{start}"
                self.tried.update(ns)
                while not self._stop.is_set():
                    try:
                        reply = http.post(f"{self._lake.url}/api/v1/ingest",
                                          params={"topic": "crash/dev-h/t"}, content=body,
                                          headers={"Content-Type": "application/x-ndjson",
                                                   "Idempotency-Key": key})
                        if reply.status_code == 200:
                            self.acked.update(ns)
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.1)
                start += self._batch
                time.sleep(self._pause)

    def finish(self) -> None:
        self._stop.set()
        self._thread.join()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _worker_pid(lake: Sensorlake) -> int | None:
    assert lake.proc is not None
    for child in _children(lake.proc.pid):
        with contextlib.suppress(OSError):
            if b"worker" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                return child
    return None


def _nats_pid(lake: Sensorlake) -> int:
    return int((lake.data_dir / "nats.pid").read_text())


def _healthy(lake: Sensorlake, since: float, timeout: float = 60.0) -> float:
    """Seconds from `since` (when the fault ended) until /healthz says ok again, and the
    worker is running: a supervised child counts as back only once it is ready."""
    while time.monotonic() - since < timeout:
        with contextlib.suppress(httpx.HTTPError):
            health = httpx.get(f"{lake.url}/healthz", timeout=1)
            if health.status_code == 200 and _worker_pid(lake):
                return time.monotonic() - since
        time.sleep(0.05)
    raise AssertionError(f"not healthy again within {timeout} s:\n{lake.log()[-3000:]}")


def _kill_worker(lake: Sensorlake) -> float:
    pid = _worker_pid(lake)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    ended = time.monotonic()
    time.sleep(0.5)  # so that /healthz sees it gone before it is asked
    return ended


def _kill_nats(lake: Sensorlake) -> float:
    os.kill(_nats_pid(lake), signal.SIGKILL)
    ended = time.monotonic()
    time.sleep(0.5)
    return ended


def _freeze_nats(lake: Sensorlake) -> float:
    pid = _nats_pid(lake)
    os.kill(pid, signal.SIGSTOP)
    time.sleep(3)
    os.kill(pid, signal.SIGCONT)
    return time.monotonic()


def _restart(lake: Sensorlake) -> None:
    assert lake.proc is not None
    lake.proc.wait(10)
    lake.proc = None
    lake.start(timeout=60)


def _kill_up(lake: Sensorlake) -> float:
    assert lake.proc is not None
    lake.proc.kill()
    ended = time.monotonic()
    _restart(lake)  # as a service manager would
    return ended


def _kill_tree(lake: Sensorlake) -> float:
    assert lake.proc is not None
    pids = [lake.proc.pid, _nats_pid(lake), *(p for p in [_worker_pid(lake)] if p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    ended = time.monotonic()
    _restart(lake)
    return ended


ACTIONS = {"kill -9 worker": _kill_worker, "kill -9 nats-server": _kill_nats,
           "SIGSTOP nats-server 3 s": _freeze_nats, "kill -9 up": _kill_up,
           "kill -9 every process": _kill_tree}


def _settled(lake: Sensorlake, timeout: float = 90.0) -> list[list[Any]]:
    """(src, n, copies) of every committed reading, once nothing is left uncommitted and the
    count holds still (read in slices: a result holds at most query.max_rows rows)."""
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        result = lake.query("SELECT count(*), max(n) FROM telemetry WHERE src IS NOT NULL")
        total, top = result["rows"][0]
        if result["uncommitted_rows"] == 0 and total == last:
            break
        assert time.monotonic() < deadline, f"the lake did not settle within {timeout} s"
        last = total
        time.sleep(1.0)
    rows: list[list[Any]] = []
    for low in range(0, int(top or 0) + 1, 4000):
        rows += lake.rows("SELECT src, n, count(*) FROM telemetry WHERE src IS NOT NULL "
                          f"AND n >= {low} AND n < {low + 4000} GROUP BY 1, 2")
    assert sum(row[2] for row in rows) == total
    return rows


def _check_device_state(lake: Sensorlake) -> None:
    """Device state counted every reading telemetry holds exactly once, whatever was killed:
    it is one more output of the same contract (a crash between the two is caught up)."""
    sql = ("SELECT device_id, count(*), count(DISTINCT (stream, seq)) FROM telemetry "
           "GROUP BY 1 ORDER BY 1")
    deadline = time.monotonic() + 20
    while True:
        expected = lake.rows(sql)
        state = lake.rows("SELECT device_id, readings, messages FROM device_state ORDER BY 1")
        if state == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert state == expected


def _check_files(lake: Sensorlake) -> None:
    """Every file the committed tables reference exists, and each table reads in full."""
    catalog = load_catalog("sensorlake", type="sql",
                           uri=f"sqlite:///{lake.data_dir / 'catalog.db'}",
                           warehouse=(lake.data_dir / "warehouse").as_uri())
    for name in ("telemetry", "dead_letter"):
        table = catalog.load_table(("sensorlake", name))
        for task in table.scan().plan_files():
            path = task.file.file_path.removeprefix("file://")
            assert Path(path).exists(), f"{name} references a missing file {path}"
        table.scan().to_arrow()


DETECTOR = """
[[detectors]]
name = "every-reading"
topic = "crash/+/t"
field = "n"
kind = "range"
max = -1
"""
"""An anomaly for every reading: the anomalies table must then hold each reading telemetry
holds, once — the detectors' checkpoint is one more output of the contract."""


def _with_detector(lake: Sensorlake) -> None:
    path = lake.data_dir.parent / "sensorlake.toml"
    path.write_text(DETECTOR)
    lake.extra_args = ("--config", str(path))


def _check_anomalies(lake: Sensorlake) -> None:
    sql = ("SELECT count(*), count(DISTINCT (stream, seq, n)) FROM telemetry WHERE src IS NOT "
           "NULL")
    found = ("SELECT count(*), count(DISTINCT (stream, seq, value)) FROM anomalies WHERE "
             "detector = 'every-reading'")
    missing = ("SELECT count(*) FROM (SELECT stream, seq, n FROM telemetry WHERE src IS NOT NULL "
               "EXCEPT SELECT stream, seq, value FROM anomalies)")
    deadline = time.monotonic() + 20
    while True:
        expected, got = lake.rows(sql)[0], lake.rows(found)[0]
        if expected == got or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got == expected, f"telemetry (rows, distinct) {expected}, anomalies {got}"
    assert lake.rows(missing) == [[0]]


def _verify(lake: Sensorlake, mqtt_load: MqttLoad, http_load: HttpLoad) -> dict[str, int]:
    rows = _settled(lake)
    counts = {(src, int(n)): int(c) for src, n, c in rows}
    problems: list[str] = []
    lost_m = sorted(n for n in mqtt_load.acked if ("mqtt", n) not in counts)
    lost_h = sorted(n for n in http_load.acked if ("http", n) not in counts)
    twice_m = sorted(n for (src, n), c in counts.items() if src == "mqtt" and c > 1
                     and (n not in mqtt_load.maybe_twice or c > 2))
    twice_h = sorted(n for (src, n), c in counts.items() if src == "http" and c > 1)
    unknown = sorted(k for k in counts if (k[0] == "http" and k[1] not in http_load.tried)
                     or (k[0] == "mqtt" and k[1] >= mqtt_load.sent))
    if lost_m:
        problems.append(f"{len(lost_m)} of {len(mqtt_load.acked)} PUBACKed MQTT readings "
                        f"missing, e.g. {lost_m[:10]}")
    if lost_h:
        problems.append(f"{len(lost_h)} of {len(http_load.acked)} acknowledged HTTP readings "
                        f"missing, e.g. {lost_h[:10]}")
    if twice_m:
        problems.append(f"{len(twice_m)} MQTT readings stored twice that were never resent, "
                        f"e.g. {twice_m[:10]}")
    if twice_h:
        problems.append(f"{len(twice_h)} HTTP readings stored twice, e.g. {twice_h[:10]}")
    if unknown:
        problems.append(f"{len(unknown)} readings nobody sent, e.g. {unknown[:10]}")
    assert not problems, "; ".join(problems) + f"\n{lake.log()[-4000:]}"
    _check_files(lake)
    _check_device_state(lake)
    _check_anomalies(lake)
    check_rollups(lake, "n", time.time() - 86_400)
    return {"mqtt acked": len(mqtt_load.acked), "http acked": len(http_load.acked)}


@pytest.mark.timeout(600)
def test_every_process_killed_at_random_and_every_fault_point_lose_nothing(
        fresh: Sensorlake) -> None:
    fresh.flush_interval = 0.3
    fresh.extra_env["SENSORLAKE_FAULTS"] = FAULTS
    _with_detector(fresh)
    fresh.start()
    rng = random.Random(8)
    mqtt_load = MqttLoad(fresh.mqtt_port)
    http_load = HttpLoad(fresh)
    recoveries: dict[str, list[float]] = {}
    try:
        for _ in range(20):
            time.sleep(rng.uniform(0.5, 2.0))
            name = rng.choice(list(ACTIONS))
            ended = ACTIONS[name](fresh)
            recoveries.setdefault(name, []).append(_healthy(fresh, ended))
        time.sleep(1.0)
    finally:
        http_load.finish()
        mqtt_load.finish()
    totals = _verify(fresh, mqtt_load, http_load)
    fired = Counter(line.split("fault point ", 1)[1].split(":", 1)[0]
                    for line in fresh.log().splitlines() if "fault point " in line)
    report = {name: f"{len(t)}× max {max(t):.1f} s, median {statistics.median(t):.1f} s"
              for name, t in recoveries.items()}
    print(f"\nrecovery (until /healthz ok): {report}\nfault points fired: {dict(fired)}\n"
          f"{totals}")
    assert sum(fired.values()) > 0, "no fault point fired"
    assert all(max(t) < 15 for t in recoveries.values()), report


@pytest.mark.parametrize("point", ["before-commit", "before-swap", "schema-evolution",
                                   "between-outputs", "after-commit", "after-checkpoint"])
def test_a_kill_at_each_fault_point_loses_nothing(fresh: Sensorlake, point: str) -> None:
    fresh.flush_interval = 0.3
    fresh.extra_env["SENSORLAKE_FAULTS"] = point  # once per data dir
    _with_detector(fresh)
    fresh.start()
    mqtt_load = MqttLoad(fresh.mqtt_port, rate=200)
    http_load = HttpLoad(fresh)
    marker = fresh.data_dir / f"fault-{point}.fired"
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, f"the worker never reached {point}"
            time.sleep(0.1)
        time.sleep(1.5)
        _healthy(fresh, time.monotonic())
        time.sleep(1.0)
    finally:
        http_load.finish()
        mqtt_load.finish()
    _verify(fresh, mqtt_load, http_load)
    restarts = httpx.get(f"{fresh.url}/healthz").json()["restarts"]
    assert restarts["worker"] >= 1
