"""Running a simulated fleet: pacing readings in time and sending them over MQTT or HTTP.

A round is one reading from every device; rounds are `interval` seconds apart (or as many per
second as `--rate` asks for). Each reading's time is when its round was due, so a slow sender
shows up as a lower achieved rate, never as squeezed timestamps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sensorlake.errors import SimulateError
from sensorlake.simulate.profiles import MAX_DEVICES, Fleet

MAX_RATE = 1_000_000.0


@dataclass(frozen=True)
class Plan:
    """What to simulate and how fast; validated so nonsense fails before anything is sent."""

    profile: str = "smartfarm"
    devices: int = 5
    interval: float | None = None
    """Seconds between one device's readings."""
    rate: float | None = None
    """Readings per second across the fleet (instead of interval)."""
    count: int | None = None
    """Rounds: readings per device. With neither count nor duration, runs until stopped."""
    duration: float | None = None
    seed: int = 0
    anomaly_rate: float = 0.01

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= MAX_DEVICES:
            raise SimulateError(f"devices must be 1 to {MAX_DEVICES:,}, not {self.devices}",
                                hint="simulate a large fleet with a few simulators")
        if self.interval is not None and self.rate is not None:
            raise SimulateError("give either an interval or a rate, not both")
        if self.interval is not None and not 0 < self.interval <= 86_400:
            raise SimulateError(f"interval must be more than 0 and at most 86400 s, "
                                f"not {self.interval}")
        if self.rate is not None and not 0 < self.rate <= MAX_RATE:
            raise SimulateError(f"rate must be more than 0 and at most {MAX_RATE:,.0f}/s, "
                                f"not {self.rate}")
        if self.count is not None and not 1 <= self.count <= 10_000_000:
            raise SimulateError(f"count must be 1 to 10,000,000 readings per device, "
                                f"not {self.count}")
        if self.duration is not None and not 0 < self.duration <= 30 * 86_400:
            raise SimulateError(f"duration must be more than 0 s and at most 30 days, "
                                f"not {self.duration}")
        if not 0 <= self.anomaly_rate <= 1:
            raise SimulateError(f"anomaly rate must be between 0 and 1, not {self.anomaly_rate}")

    @property
    def round_seconds(self) -> float:
        if self.rate is not None:
            return self.devices / self.rate
        return self.interval if self.interval is not None else 1.0

    @property
    def rounds(self) -> int | None:
        """Readings per device; None runs until stopped."""
        if self.count is not None:
            return self.count
        if self.duration is not None:
            return max(1, int(self.duration / self.round_seconds))
        return None

    @property
    def total(self) -> int | None:
        return self.rounds * self.devices if self.rounds is not None else None


@dataclass
class Progress:
    sent: int = 0
    acked: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        return self.acked / self.elapsed if self.elapsed > 0 else 0.0

    def note_error(self, error: str) -> None:
        if len(self.errors) < 10 and error not in self.errors:
            self.errors.append(error)

    def to_json(self) -> dict[str, Any]:
        return {"sent": self.sent, "acked": self.acked, "failed": self.failed,
                "elapsed_s": round(self.elapsed, 3), "rate": round(self.rate, 1),
                "done": self.finished is not None, "errors": self.errors}


class Sink(Protocol):
    """Where readings go; `send` returns how many of them were acknowledged."""

    async def send(self, batch: list[tuple[str, dict[str, Any]]]) -> int: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Identity:
    """A device that sends as itself: its name, and its bundle for TLS (or None)."""

    name: str
    bundle: Path | None = None


def bundle_identities(path: Path) -> list[Identity]:
    """A bundle folder (one device) or a folder of bundles (a fleet of registered devices)."""
    if (path / "endpoint.json").is_file():
        folders = [path]
    else:
        folders = sorted(p for p in path.iterdir() if (p / "endpoint.json").is_file()) \
            if path.is_dir() else []
    if not folders:
        raise SimulateError(f"{path} holds no device bundle",
                            hint="pass a folder written by `sensorlake devices register` "
                            "(with endpoint.json), or the folder that holds several")
    return [Identity(json.loads((f / "endpoint.json").read_text())["device"], f)
            for f in folders]


def new_client(role: str, bundle: Path | None = None, username: str | None = None,
               password: str | None = None) -> mqtt.Client:
    """A paho client for load: a deep in-flight window, no local queue limit, and the TLS
    identity of a device bundle or a username and token."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"sensorlake-{role}-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    if bundle is not None:
        client.tls_set(ca_certs=str(bundle / "ca.crt"), certfile=str(bundle / "device.crt"),
                       keyfile=str(bundle / "device.key"))
    if username is not None:
        client.username_pw_set(username, password)
    return client


class MqttSink:
    """paho-mqtt clients: one shared connection, or one per device bundle (TLS as the device)."""

    def __init__(self, host: str, port: int, identities: list[Identity] | None, qos: int = 1,
                 username: str | None = None, password: str | None = None) -> None:
        self._qos = qos
        self._clients: dict[str | None, mqtt.Client] = {}
        if identities and identities[0].bundle is not None:
            for ident in identities:
                self._clients[ident.name] = self._connect(host, port, ident.bundle, None, None)
        else:
            self._clients[None] = self._connect(host, port, None, username, password)

    def _connect(self, host: str, port: int, bundle: Path | None, username: str | None,
                 password: str | None) -> mqtt.Client:
        client = new_client("sim", bundle, username, password)
        connected: list[str] = []
        client.on_connect = lambda _c, _u, _f, rc, _p: connected.append(str(rc))
        try:
            client.connect(host, port)
        except (OSError, ssl.SSLError) as exc:
            raise SimulateError(f"cannot connect to MQTT at {host}:{port}: {exc}",
                                hint="is `sensorlake up` running? --host/--mqtt-port pick "
                                "another target; registered devices need --bundle") from exc
        client.loop_start()
        deadline = time.monotonic() + 10
        while not connected and time.monotonic() < deadline:
            time.sleep(0.01)
        if connected != ["Success"]:
            client.loop_stop()
            raise SimulateError(
                f"MQTT at {host}:{port} refused the connection: "
                f"{connected[0] if connected else 'no answer'}",
                hint="once devices are registered, pass --bundle (TLS) with --mqtt-port 8883, "
                "or --username/--token on the plain port")
        return client

    async def send(self, batch: list[tuple[str, dict[str, Any]]]) -> int:
        infos = []
        for topic, payload in batch:
            device = topic.split("/")[1] if "/" in topic else None
            client = self._clients.get(device) or self._clients.get(None) \
                or next(iter(self._clients.values()))
            infos.append(client.publish(topic, orjson.dumps(payload), qos=self._qos))

        def wait() -> int:
            acked = 0
            for info in infos:
                if self._qos:
                    info.wait_for_publish(timeout=30)
                acked += info.is_published() if self._qos else info.rc == mqtt.MQTT_ERR_SUCCESS
            return acked

        return await asyncio.to_thread(wait)

    async def close(self) -> None:
        for client in self._clients.values():
            client.disconnect()
            client.loop_stop()


class HttpSink:
    """POST /api/v1/ingest, one JSON array per topic and round."""

    def __init__(self, url: str, api_key: str | None = None, verify: str | bool = True) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._url = url.rstrip("/") + "/api/v1/ingest"
        self._client = httpx.AsyncClient(headers=headers, timeout=60, verify=verify)

    async def send(self, batch: list[tuple[str, dict[str, Any]]]) -> int:
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for topic, payload in batch:
            by_topic.setdefault(topic, []).append(payload)
        acked = 0
        for topic, payloads in by_topic.items():
            try:
                reply = await self._client.post(
                    self._url, params={"topic": topic}, content=orjson.dumps(payloads),
                    headers={"Content-Type": "application/json"})
            except httpx.HTTPError as exc:
                raise SimulateError(f"cannot reach {self._url}: {exc}",
                                    hint="is `sensorlake up` running? --http-url picks "
                                    "another target") from exc
            if reply.status_code != 200:
                raise SimulateError(f"{self._url} answered {reply.status_code}: "
                                    f"{reply.text[:300]}")
            acked += int(reply.json()["accepted"])
        return acked

    async def close(self) -> None:
        await self._client.aclose()


async def stopped_before(due: float, stop: asyncio.Event) -> bool:
    """Sleep until `due` (event loop time); True when `stop` was set first."""
    delay = due - asyncio.get_running_loop().time()
    if delay <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except TimeoutError:
        return False
    return True


async def run(plan: Plan, sink: Sink, progress: Progress, stop: asyncio.Event,
              identities: list[Identity] | None = None,
              on_round: Callable[[Progress], None] | None = None) -> Progress:
    """Send rounds until count/duration is reached or `stop` is set."""
    fleet = Fleet(plan.profile, plan.devices, seed=plan.seed, anomaly_rate=plan.anomaly_rate)
    names = [i.name for i in identities] if identities else fleet.names
    start_wall = dt.datetime.now(dt.UTC)
    loop = asyncio.get_running_loop()
    start = loop.time()
    tick = 0
    try:
        while not stop.is_set() and (plan.rounds is None or tick < plan.rounds):
            if await stopped_before(start + tick * plan.round_seconds, stop):
                break
            at = start_wall + dt.timedelta(seconds=tick * plan.round_seconds)
            batch = []
            for index in range(plan.devices):
                reading = fleet.reading(index, tick, at)
                if reading is None:
                    continue  # a sensor dropout: this device says nothing this round
                topic = fleet.topic(index)
                name = names[index % len(names)]
                if identities:
                    levels = topic.split("/")
                    levels[1] = name
                    topic = "/".join(levels)
                    if "device_id" in reading:
                        reading["device_id"] = name
                batch.append((topic, reading))
            progress.sent += len(batch)
            try:
                acked = await sink.send(batch)
            except SimulateError as exc:
                progress.failed += len(batch)
                progress.note_error(str(exc))
                if progress.acked == 0:
                    raise
            else:
                progress.acked += acked
                progress.failed += len(batch) - acked
            if on_round is not None:
                on_round(progress)
            tick += 1
    finally:
        progress.finished = time.monotonic()
        await sink.close()
    return progress
