"""The agent's MQTT connection: paho-mqtt in its own thread, reporting to the agent's loop.

paho reconnects by itself (capped backoff) and re-sends, in order, every QoS 1 message it was
handed and has no PUBACK for. The agent relies on that and never hands a message twice within
one run; it only has to learn what happened, so every callback just posts an event.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from sensorlake.errors import AgentError

KEEPALIVE_S = 10
"""Short, so a broker that hangs rather than closes is noticed within about 20 s (one
keepalive without traffic in, one more without an answer to the ping)."""
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30


@dataclass(frozen=True)
class Broker:
    """Where to publish and as whom: a device bundle's TLS files, or a name and token."""

    host: str
    port: int
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        return f"mqtt{'s' if self.ca else ''}://{self.host}:{self.port}"


@dataclass(frozen=True)
class Bundle:
    """A folder written by `sensorlake devices register`."""

    device: str
    host: str
    port: int
    topic: str
    folder: Path


def read_bundle(folder: Path) -> Bundle:
    endpoint = folder / "endpoint.json"
    try:
        data = json.loads(endpoint.read_text(encoding="utf-8"))
        bundle = Bundle(str(data["device"]), str(data["host"]), int(data["mqtts_port"]),
                        str(data["topic"]), folder)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AgentError(f"{endpoint} is not a usable device bundle: {exc}",
                         hint="pass --bundle the folder `sensorlake devices register` wrote "
                         "for this device (endpoint.json, ca.crt, device.crt, device.key)"
                         ) from exc
    for name in ("ca.crt", "device.crt", "device.key"):
        if not (folder / name).is_file():
            raise AgentError(f"the bundle {folder} has no {name}",
                             hint="copy the whole bundle folder onto the device")
    return bundle


@dataclass(frozen=True)
class Connected:
    pass


@dataclass(frozen=True)
class Disconnected:
    reason: str


@dataclass(frozen=True)
class Refused:
    """The broker answered CONNECT with a refusal (bad token, revoked device…)."""

    reason: str


@dataclass(frozen=True)
class Acked:
    mid: int


@dataclass(frozen=True)
class Wake:
    """Nothing happened on the link; the loop should look at its flags (a signal arrived)."""


Event = Connected | Disconnected | Refused | Acked | Wake


class Link:
    """One paho client; `events` is where the agent's loop learns of connects and PUBACKs."""

    def __init__(self, broker: Broker, window: int, client_name: str) -> None:
        self.broker = broker
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"sensorlake-agent-{client_name}-"
                                   f"{uuid.uuid4().hex[:6]}")
        # paho never holds back what it is handed (the agent bounds that itself) and keeps
        # everything unacknowledged for re-sending after a reconnect.
        self._client.max_inflight_messages_set(window)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        if broker.ca is not None:
            try:
                self._client.tls_set(ca_certs=str(broker.ca),
                                     certfile=str(broker.cert) if broker.cert else None,
                                     keyfile=str(broker.key) if broker.key else None)
            except (OSError, ssl.SSLError) as exc:
                raise AgentError(f"cannot load the TLS files of the bundle: {exc}",
                                 hint="copy the bundle again from `sensorlake devices "
                                 "register` (or `devices rotate`)") from exc
        if broker.username is not None:
            self._client.username_pw_set(broker.username, broker.password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_connect_fail = self._on_connect_fail

    def start(self) -> None:
        """Connect in the background: a broker that is down at start is retried like any
        other outage, because the readings are queued meanwhile."""
        try:
            self._client.connect_async(self.broker.host, self.broker.port, KEEPALIVE_S)
        except (OSError, ValueError) as exc:
            raise AgentError(f"cannot connect to {self.broker.url}: {exc}",
                             hint="check --host/--port (or the bundle's endpoint.json)") from exc
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes) -> int:
        """Hand one QoS 1 message to paho; its mid comes back in `Acked` once PUBACKed."""
        return self._client.publish(topic, payload, qos=1).mid

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: mqtt.ConnectFlags, reason: ReasonCode,
                    _p: Any) -> None:
        if reason.is_failure:
            self.events.put(Refused(str(reason)))
        else:
            self.events.put(Connected())

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: mqtt.DisconnectFlags,
                       reason: ReasonCode, _p: Any) -> None:
        self.events.put(Disconnected(str(reason)))

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        self.events.put(Disconnected("no answer"))

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _r: ReasonCode, _p: Any) -> None:
        self.events.put(Acked(mid))


def default_name() -> str:
    """This machine's host name, made safe for one MQTT topic level."""
    name = socket.gethostname().split(".")[0] or "device"
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
