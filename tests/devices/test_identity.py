"""Who may write as which device, on a running `sensorlake up` with devices registered.

A device writes only as itself: over MQTT the topic it may publish to names it (certificate or
token alike), and a reading whose payload names another device goes to dead_letter, unless the
device is a gateway. Over HTTP an API key bound to a device is held to the same rule. Real
nats-server, real TLS and token-gate clients, real API keys; queries need a read key because
keys exist.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest

from tests.access.helpers import ingest, query
from tests.conftest import Sensorlake
from tests.devices.test_mqtt_tls import Plain, attempt

pytestmark = [
    pytest.mark.slow,
    # As in test_mqtt_tls: paho may leave a TLS socket for the collector to close.
    pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@dataclass(frozen=True)
class Fleet:
    lake: Sensorlake
    read: str
    ingest: str
    bound: str
    """An ingest key bound to gh-01."""
    token: str
    """tok-1's MQTT token."""


def _key(lake: Sensorlake, *args: str) -> str:
    return lake.cli("keys", "create", *args).stdout.strip()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Devices, a token and keys made before `up` starts, so none waits for a reload."""
    lake = Sensorlake(tmp_path_factory.mktemp("identity") / "data")
    lake.cli("devices", "register", "gh-01", "gh-02", "gh-03", "tok-1")
    lake.cli("devices", "register", "gw-1", "--gateway")
    token = lake.cli("devices", "token", "tok-1").stdout.splitlines()[1].strip()
    keys = Fleet(lake, read=_key(lake, "--scope", "read"),
                 ingest=_key(lake, "--scope", "ingest"),
                 bound=_key(lake, "--scope", "ingest", "--device", "gh-01"), token=token)
    lake.start()
    yield keys
    lake.stop()


def committed(fleet: Fleet, sql: str, count: int, timeout: float = 15.0) -> list[list[Any]]:
    """The rows of `sql` once the lake has committed everything sent so far (dead letters are
    visible only then) and there are at least `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        reply = query(fleet.lake, sql, fleet.read)
        assert reply.status_code == 200, reply.text
        result = reply.json()
        rows: list[list[Any]] = result["rows"]
        if result["uncommitted_rows"] == 0 and len(rows) >= count:
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"not committed in {timeout}s: {result}")
        time.sleep(0.2)


def stored(fleet: Fleet, marker: str, count: int = 1) -> list[list[Any]]:
    """(device_id, topic) of the telemetry rows that carry `marker`."""
    return committed(fleet, "SELECT device_id, topic FROM telemetry "
                     f"WHERE marker = '{marker}' ORDER BY device_id", count)


def dead(fleet: Fleet, marker: str, count: int = 1) -> list[list[Any]]:
    """(device_id, reason) of the dead letters whose raw reading holds `marker`."""
    return committed(fleet, "SELECT device_id, reason FROM dead_letter "
                     f"WHERE CAST(raw AS VARCHAR) LIKE '%{marker}%' ORDER BY reason", count)


def send(client: mqtt.Client, topic: str, payload: object) -> None:
    info = client.publish(topic, orjson.dumps(payload), qos=1)
    info.wait_for_publish(timeout=10)
    assert info.is_published()


def markers(n: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(n)]


def refused(rows: list[list[Any]], publisher: str, named: str) -> bool:
    """One dead letter, filed under the publisher, whose reason names both devices and how to
    make the publisher a gateway."""
    [(device, reason)] = rows
    return device == publisher and all(part in reason for part in (
        f"names device {named!r}", f"published by {publisher!r}",
        f"`sensorlake devices gateway {publisher}`"))


def test_a_certificate_device_cannot_write_as_another_device(fleet: Fleet) -> None:
    forged, own, named_self, forged_item, own_item = markers(5)
    client = attempt(fleet.lake, "gh-01")
    assert client.result == "connected"
    topic = "farm/gh-01/telemetry"
    client.publish(topic, {"device_id": "gh-02", "v": 1, "marker": forged})
    client.publish(topic, {"v": 2, "marker": own})
    client.publish(topic, {"device_id": "gh-01", "v": 3, "marker": named_self})
    send(client.client, topic, [{"device_id": "gh-02", "v": 4, "marker": forged_item},
                                {"v": 5, "marker": own_item}])
    client.close()
    for marker in (own, named_self, own_item):
        assert stored(fleet, marker) == [["gh-01", topic]]
    assert refused(dead(fleet, forged), "gh-01", "gh-02")
    assert refused(dead(fleet, forged_item), "gh-01", "gh-02")
    for marker in (forged, forged_item):  # not as gh-02, nor as gh-01: not at all
        assert stored(fleet, marker, 0) == []


def test_a_token_device_cannot_write_as_another_device(fleet: Fleet) -> None:
    forged, alias, own, named_self = markers(4)
    client = Plain(fleet.lake.mqtt_port, "tok-1", fleet.token)
    assert client.result == "connected"
    topic = "farm/tok-1/telemetry"
    try:
        send(client.client, topic, {"device_id": "gh-02", "v": 1, "marker": forged})
        send(client.client, topic, {"deviceId": "gh-02", "v": 1, "marker": alias})
        send(client.client, topic, {"v": 2, "marker": own})
        send(client.client, topic, {"device_id": "tok-1", "v": 3, "marker": named_self})
    finally:
        client.outcome()
    assert stored(fleet, own) == [["tok-1", topic]]
    assert stored(fleet, named_self) == [["tok-1", topic]]
    for marker in (forged, alias):
        assert refused(dead(fleet, marker), "tok-1", "gh-02")
        assert stored(fleet, marker, 0) == []


def test_a_gateway_may_write_for_other_devices(fleet: Fleet) -> None:
    single, batch, own = markers(3)
    client = attempt(fleet.lake, "gw-1")
    assert client.result == "connected"
    topic = "site/gw-1/relay"
    client.publish(topic, {"device_id": "s-1", "v": 1, "marker": single})
    send(client.client, topic, [{"device_id": "s-2", "v": 2, "marker": batch},
                                {"device_id": "s-3", "v": 3, "marker": batch},
                                {"device_id": "gh-02", "v": 4, "marker": batch}])
    client.publish(topic, {"v": 5, "marker": own})
    client.close()
    assert stored(fleet, single) == [["s-1", topic]]
    assert stored(fleet, batch, 3) == [["gh-02", topic], ["s-2", topic], ["s-3", topic]]
    assert stored(fleet, own) == [["gw-1", topic]]
    assert dead(fleet, single, 0) == []
    assert dead(fleet, batch, 0) == []


def landed(fleet: Fleet, marker: str, timeout: float = 15.0) -> str:
    """Where the writer committed the reading with `marker`: "stored" or "dead".

    Only committed rows count: the fresh tail of a query decodes with the registry as it is
    now, and the question is whether the running writer has caught up with it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stored(fleet, marker, 0):  # waits until nothing is left uncommitted
            return "stored"
        if dead(fleet, marker, 0):
            return "dead"
        time.sleep(0.2)
    raise AssertionError(f"reading {marker} committed nowhere in {timeout}s")


def until(fleet: Fleet, client: mqtt.Client, named: str, want: str, timeout: float = 15.0
          ) -> float:
    """Publish readings from gh-03 naming `named` until one lands where `want` says; the
    seconds that took."""
    started = time.monotonic()
    while True:
        (marker,) = markers(1)
        send(client, "farm/gh-03/telemetry", {"device_id": named, "marker": marker})
        where = landed(fleet, marker)
        if where == "dead":
            assert refused(dead(fleet, marker), "gh-03", named)
        if where == want:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"still {where} after {timeout}s"
        time.sleep(0.3)


def test_making_a_device_a_gateway_while_up_runs_needs_no_restart(fleet: Fleet) -> None:
    own, forged = markers(2)
    client = attempt(fleet.lake, "gh-03")
    assert client.result == "connected"
    topic = "farm/gh-03/telemetry"
    try:
        client.publish(topic, {"v": 1, "marker": own})
        client.publish(topic, {"device_id": "s-4", "v": 1, "marker": forged})
        assert stored(fleet, own) == [["gh-03", topic]]
        assert refused(dead(fleet, forged), "gh-03", "s-4")

        done = fleet.lake.cli("devices", "gateway", "gh-03")
        assert "gh-03 is now a gateway" in done.stdout
        assert until(fleet, client.client, "s-4", "stored") < 10
        assert not client.disconnected.is_set()  # the switch did not drop the device

        fleet.lake.cli("devices", "gateway", "gh-03", "--off")
        assert until(fleet, client.client, "s-5", "dead") < 10
    finally:
        client.close()


def test_an_api_key_bound_to_a_device_may_not_name_another(fleet: Fleet) -> None:
    forged, own, alone = markers(3)
    topic = "farm/gh-01/telemetry"
    reply = ingest(fleet.lake, topic, [{"device_id": "gh-02", "v": 1, "marker": forged},
                                       {"v": 2, "marker": own}], fleet.bound)
    assert reply.status_code == 200, reply.text
    assert reply.json()["accepted"] == 1
    rejected = reply.json()["rejected"]
    assert [r["index"] for r in rejected] == [0]
    assert rejected[0]["error"] == ("the reading names device 'gh-02'; this API key may only "
                                    "write as 'gh-01'")
    single = ingest(fleet.lake, topic, {"device_id": "gh-02", "marker": alone}, fleet.bound)
    assert single.status_code == 400
    assert single.json()["accepted"] == 0
    assert [r["index"] for r in single.json()["rejected"]] == [0]
    assert stored(fleet, own) == [["gh-01", topic]]
    for marker in (forged, alone):  # refused before the stream: no dead letter either
        assert stored(fleet, marker, 0) == []
        assert dead(fleet, marker, 0) == []


def test_an_unbound_ingest_key_may_name_any_device(fleet: Fleet) -> None:
    (marker,) = markers(1)
    topic = "farm/gh-01/telemetry"
    reply = ingest(fleet.lake, topic, [{"device_id": "gh-02", "marker": marker},
                                       {"device_id": "s-9", "marker": marker}], fleet.ingest)
    assert reply.json() == {"accepted": 2, "rejected": []}
    assert stored(fleet, marker, 2) == [["gh-02", topic], ["s-9", topic]]

