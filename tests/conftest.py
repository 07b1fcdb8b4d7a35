"""Fixtures that run the real thing: `sensorlake up` as a subprocess with its own nats-server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

SENSORLAKE = [sys.executable, "-m", "sensorlake.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sensorlake:
    """A `sensorlake up` process on free ports and its own data dir."""

    def __init__(self, data_dir: Path, *, flush_interval: float = 1.0,
                 args: tuple[str, ...] = (), **env: str) -> None:
        self.data_dir = data_dir
        self.http_port = free_port()
        self.mqtt_port = free_port()
        self.mqtts_port = free_port()
        self.nats_port = free_port()
        self.flush_interval = flush_interval
        self.extra_env = env
        self.extra_args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-up.log"

    @property
    def url(self) -> str:
        scheme = "https" if self.extra_env.get("SENSORLAKE_SERVER__HTTPS") == "true" else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SENSORLAKE_STREAM__PORT=str(self.nats_port),
            SENSORLAKE_SERVER__MQTTS_PORT=str(self.mqtts_port),
            SENSORLAKE_LAKE__FLUSH_INTERVAL=str(self.flush_interval),
            SENSORLAKE_LOG__LEVEL="info",
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> Sensorlake:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*SENSORLAKE, "up", "--data-dir", str(self.data_dir),
                 "--http-port", str(self.http_port), "--mqtt-port", str(self.mqtt_port),
                 *self.extra_args],
                env=self.env(), stdout=log, stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"sensorlake up exited early:\n{self.log()}")
            try:
                # Readiness only; tests of https check the certificate themselves.
                if httpx.get(f"{self.url}/healthz", timeout=1,
                             verify=False).status_code == 200:  # noqa: S501
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"sensorlake up not healthy in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def ingest(self, topic: str, body: Any, content_type: str = "application/json"
               ) -> httpx.Response:
        data = body if isinstance(body, bytes) else httpx.Request(
            "POST", "http://x", json=body).content
        return httpx.post(f"{self.url}/api/v1/ingest", params={"topic": topic}, content=data,
                          headers={"Content-Type": content_type}, timeout=30)

    def query(self, sql: str) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/api/v1/query", json={"sql": sql}, timeout=30)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def rows(self, sql: str) -> list[list[Any]]:
        rows: list[list[Any]] = self.query(sql)["rows"]
        return rows

    def wait_rows(self, sql: str, count: int, timeout: float = 10.0) -> list[list[Any]]:
        deadline = time.monotonic() + timeout
        rows = self.rows(sql)
        while len(rows) < count and time.monotonic() < deadline:
            time.sleep(0.05)
            rows = self.rows(sql)
        return rows

    def mqtt_publish(self, topic: str, payloads: list[bytes], qos: int = 1) -> None:
        publish(self.mqtt_port, topic, payloads, qos)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*SENSORLAKE, *args, "--data-dir", str(self.data_dir)],
            env=self.env(), capture_output=True, text=True, timeout=60, check=False,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result


def publish(port: int, topic: str, payloads: list[bytes], qos: int = 1) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, p, qos=qos) for p in payloads]
        for info in infos:
            info.wait_for_publish(timeout=10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture(scope="session")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensorlake]:
    """One running pipeline shared by the tests that only publish and query (own topics each)."""
    instance = Sensorlake(tmp_path_factory.mktemp("shared") / "data", flush_interval=1.0).start()
    yield instance
    if instance.proc is not None:
        instance.stop()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Sensorlake]:
    """A pipeline of a test's own, for tests that stop, kill or restart it (not started yet)."""
    instance = Sensorlake(tmp_path / "data")
    yield instance
    if instance.proc is not None:
        instance.stop(signal.SIGKILL)


@pytest.fixture
def device() -> str:
    """A device name no other test uses, so shared-pipeline tests never see each other's rows."""
    return f"dev-{uuid.uuid4().hex[:10]}"
