"""The embedded nats-server as a supervised child: started, kept running, reconfigured live.

Before devices may connect for the first time, the server runs once without its MQTT listener
while sensorlake puts a consumer on `$MQTT_msgs` (see `partitions.py`): from then on that stream
keeps every QoS 1 publish until the lake has committed it, even across crashes of any process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from sensorlake.config import Config
from sensorlake.devices.registry import Registry
from sensorlake.devices.tls import ensure_server_certificate
from sensorlake.errors import ServerStartError
from sensorlake.stream.connection import StreamClient
from sensorlake.stream.partitions import MqttCutover
from sensorlake.stream.server import find_nats_server, render_nats_config
from sensorlake.supervise import ChildSupervisor, spawn

log = logging.getLogger(__name__)


def _stop_stale_server(pid_file: Path) -> None:
    """A nats-server left from a previous run on this data dir (e.g. after a power cut)."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"nats-server" not in cmdline:
        return
    log.warning("stopping nats-server pid %s left over from a previous run", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


async def _port_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class NatsSupervisor(ChildSupervisor):
    """Runs nats-server as a child and restarts it with capped, jittered backoff if it dies."""

    name = "nats-server"

    def __init__(self, config: Config, *, start_timeout: float = 15.0) -> None:
        super().__init__()
        self._config = config
        self._binary = find_nats_server(config.stream.nats_server)
        self._conf_path = config.data_dir / "nats.conf"
        self._start_timeout = start_timeout
        self._rendered = ""
        self._tls = False
        """Whether the configuration written last has MQTT over TLS (devices are registered)."""

    async def start(self) -> None:
        self._config.data_dir.mkdir(parents=True, exist_ok=True)
        _stop_stale_server(self._config.data_dir / "nats.pid")
        if MqttCutover.read(self._store_dir) is None:
            await self._hold_mqtt_messages()
        self._write_config()
        await self._spawn()

    @property
    def _store_dir(self) -> Path:
        return self._config.data_dir / "nats"

    async def _hold_mqtt_messages(self) -> None:
        """Once per data dir: with no MQTT listener yet, create `$MQTT_msgs` and a consumer that
        holds its messages, and note where TELEMETRY stood (the cutover)."""
        self._write_config(mqtt=False)
        await self._spawn(mqtt=False)
        client = StreamClient(self._config)
        try:
            await client.connect(name="sensorlake-setup", reconnect=False)
            telemetry = await client.ensure_stream()
            await client.ensure_mqtt_stream()
            await client.hold_mqtt_stream()
            MqttCutover(telemetry.identity, telemetry.last_seq).write(self._store_dir)
            log.info("MQTT QoS 1 readings are held in $MQTT_msgs from TELEMETRY seq %s on",
                     telemetry.last_seq)
        finally:
            await client.close()
            await self._stop_child()

    def restart(self) -> None:
        """Stop the server gracefully; `supervise` starts it again."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)

    async def _stop_child(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self._proc = None
        self._rendered = ""

    def _write_config(self, *, mqtt: bool = True) -> bool:
        """Render the configuration; True when it differs from what the server runs with."""
        devices = Registry(self._config.data_dir).devices()
        rendered = render_nats_config(self._config, devices, mqtt=mqtt)
        if self._rendered == rendered:
            return False
        self._rendered = rendered
        self._tls = bool(devices)
        if self._tls:
            ensure_server_certificate(self._config)  # before nats-server reads the paths
        self._conf_path.write_text(rendered, encoding="utf-8")
        os.chmod(self._conf_path, 0o600)
        return True

    async def follow_registry(self, interval: float = 1.0) -> None:
        """Apply device registry changes (made by the CLI while `up` runs) to the running server:
        a reload keeps every other device connected; a revoked device is disconnected."""
        while not self._stopping:
            await asyncio.sleep(interval)
            tls_before = self._tls
            try:
                changed = await asyncio.to_thread(self._write_config)
            except Exception as exc:  # a broken registry must not take the server down
                log.error("cannot apply the device registry: %s", exc)
                continue
            proc = self._proc
            if not changed or proc is None or proc.returncode is not None:
                continue
            if self._tls != tls_before:
                # Plain → TLS (first device registered): a new listener needs a restart.
                log.warning("MQTT switches to TLS on port %s; restarting nats-server",
                            self._config.server.mqtts_port)
                proc.send_signal(signal.SIGTERM)
            else:
                log.info("device registry changed; reloading nats-server")
                proc.send_signal(signal.SIGHUP)

    async def _spawn(self, *, mqtt: bool = True) -> None:
        host = self._config.server.host
        mqtt_port, mqtt_key = ((self._config.server.mqtts_port, "server.mqtts_port") if self._tls
                               else (self._config.server.mqtt_port, "server.mqtt_port"))
        ports = [(self._config.stream.port, "stream.port")]
        if mqtt:
            ports.append((mqtt_port, mqtt_key))
        for port, what in ports:
            if await _port_open("127.0.0.1" if what == "stream.port" else host, port):
                raise ServerStartError(
                    f"port {port} ({what}) is already in use",
                    hint=f"stop what listens there or choose another port with {what}",
                )
        self._proc = await spawn(
            [str(self._binary), "-c", str(self._conf_path)], capture_stderr=True
        )
        deadline = asyncio.get_running_loop().time() + self._start_timeout
        while asyncio.get_running_loop().time() < deadline:
            if self._proc.returncode is not None:
                err = b""
                if self._proc.stderr:
                    err = await self._proc.stderr.read()
                raise ServerStartError(
                    f"nats-server exited with code {self._proc.returncode}: "
                    f"{err.decode(errors='replace').strip()[-500:]}",
                    hint=f"see {self._config.data_dir / 'nats.log'}",
                )
            if await _port_open("127.0.0.1", self._config.stream.port) and (
                not mqtt or await _port_open(host, mqtt_port)
            ):
                log.info("nats-server pid %s ready", self._proc.pid)
                return
            await asyncio.sleep(0.05)
        raise ServerStartError(
            f"nats-server did not become ready within {self._start_timeout:.0f} s",
            hint=f"see {self._config.data_dir / 'nats.log'}",
        )
