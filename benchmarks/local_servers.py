"""What the benchmarks share to run servers on this machine: free ports, a loopback HTTP call,
and `sensorlake up` started as a user starts it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(url: str, data: bytes | None = None, timeout: float = 600,
         headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback)
        body: bytes = response.read()
    return body


def wait_for(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited early")
        try:
            http(url, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not answer on {url}")


def start_up(cli: list[str], data_dir: Path, env: dict[str, str], cwd: Path | None = None,
             mqtt_port: int | None = None) -> tuple[str, subprocess.Popen[bytes]]:
    """`sensorlake up` on `data_dir`, every port free, once it is healthy: its URL and process."""
    port = free_port()
    environ = dict(os.environ, SENSORLAKE_STREAM__PORT=str(free_port()),
                   SENSORLAKE_SERVER__MQTTS_PORT=str(free_port()), **env)
    proc = subprocess.Popen([*cli, "up", "--data-dir", str(data_dir), "--http-port", str(port),
                             "--mqtt-port", str(mqtt_port or free_port())], cwd=cwd, env=environ,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_for(f"{base}/healthz", proc, "sensorlake up")
    return base, proc
