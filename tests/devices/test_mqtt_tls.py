"""Registered devices over MQTT TLS: each connects as itself and publishes only to its topics.

Real nats-server, real TLS clients (paho-mqtt with the generated bundle, and Debian's
mosquitto_pub through the bundle's publish.sh).
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest

from sensorlake.devices.ca import CertificateAuthority, write_private
from tests.conftest import SENSORLAKE, Sensorlake, free_port

pytestmark = [
    pytest.mark.slow,
    # paho-mqtt drops its TLS socket without closing it when the server refuses the handshake
    # (the refusal these tests provoke); it is collected later, with a warning.
    pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def close(client: mqtt.Client) -> None:
    """Disconnect and close the socket too: a refused client may still hold one."""
    client.disconnect()
    client.loop_stop()
    sock = client.socket()
    if sock is not None:
        sock.close()


class Attempt:
    """One TLS MQTT connection; `result` is "connected" or why it was refused."""

    def __init__(self, port: int, ca: Path, cert: Path | None, key: Path | None) -> None:
        self.result = ""
        self.disconnected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"t-{uuid.uuid4().hex[:8]}")
        self.client.tls_set(ca_certs=str(ca), certfile=str(cert) if cert else None,
                            keyfile=str(key) if key else None)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_: self.disconnected.set()
        try:
            self.client.connect("127.0.0.1", port)
        except (ssl.SSLError, OSError) as exc:
            self.result = f"refused: {exc}"
            sock = self.client.socket()
            if sock is not None:
                sock.close()
            return
        self.client.loop_start()
        deadline = time.monotonic() + 5
        while not self.result and time.monotonic() < deadline:
            if self.disconnected.is_set():
                self.result = "refused: connection closed"
            time.sleep(0.02)
        self.result = self.result or "refused: no CONNACK"

    def _on_connect(self, _c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        self.result = "connected" if str(rc) == "Success" else f"refused: {rc}"

    def publish(self, topic: str, payload: dict[str, object]) -> None:
        info = self.client.publish(topic, orjson.dumps(payload), qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published()

    def close(self) -> None:
        close(self.client)

    def outcome(self) -> str:
        """The result, with the connection closed (for tests that only ask whether it works)."""
        self.close()
        return self.result


def bundle(lake: Sensorlake, name: str) -> Path:
    return lake.data_dir / "bundles" / name


def attempt(lake: Sensorlake, name: str) -> Attempt:
    folder = bundle(lake, name)
    return Attempt(lake.mqtts_port, folder / "ca.crt", folder / "device.crt",
                   folder / "device.key")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensorlake]:
    lake = Sensorlake(tmp_path_factory.mktemp("secured") / "data")
    lake.cli("devices", "register", "gh-01", "gh-02", "gh-03", "gh-04", "tok-1", "tok-2",
             "--attr", "type=dht22")
    lake.start()
    yield lake
    lake.stop()


def test_a_registered_device_publishes_to_its_topic_and_the_reading_is_queryable(
    secured: Sensorlake,
) -> None:
    marker = uuid.uuid4().hex
    client = attempt(secured, "gh-01")
    assert client.result == "connected"
    client.publish("farm/gh-01/telemetry", {"temperature": 21.5, "marker": marker})
    client.close()
    rows = secured.wait_rows(
        f"SELECT device_id, topic, temperature FROM telemetry WHERE marker = '{marker}'", 1)
    assert rows == [["gh-01", "farm/gh-01/telemetry", 21.5]]


def test_the_devices_api_lists_registered_devices_and_any_that_published(
    secured: Sensorlake,
) -> None:
    assert secured.ingest("farm/walk-in/telemetry", {"t": 1}).status_code == 200
    secured.wait_rows("SELECT 1 FROM telemetry WHERE device_id = 'walk-in'", 1)
    reply = httpx.get(f"{secured.url}/api/v1/devices", timeout=30)
    assert reply.status_code == 200
    devices = {d["name"]: d for d in reply.json()["devices"]}
    assert devices["gh-02"]["status"] == "active"
    assert devices["gh-02"]["attributes"] == {"type": "dht22"}
    assert devices["walk-in"]["status"] == "unregistered"
    assert devices["walk-in"]["readings"] == 1
    assert devices["walk-in"]["last_seen"] is not None


def test_the_bundle_examples_work_with_mosquitto_pub_and_paho(secured: Sensorlake) -> None:
    folder = bundle(secured, "gh-02")
    assert os.stat(folder / "device.key").st_mode & 0o777 == 0o600
    done = subprocess.run(["sh", str(folder / "publish.sh")], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, str(folder / "publish.py")], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "published"
    assert secured.wait_rows(
        "SELECT topic FROM telemetry WHERE device_id = 'gh-02'", 2) == [
            ["farm/gh-02/telemetry"], ["farm/gh-02/telemetry"]]


def test_a_device_may_subscribe_to_its_own_command_topic_only(secured: Sensorlake) -> None:
    client = attempt(secured, "gh-03")
    assert client.result == "connected"
    granted: list[list[str]] = []
    client.client.on_subscribe = lambda _c, _u, _mid, codes, _p: granted.append(
        [str(code) for code in codes])
    client.client.subscribe([("cmd/gh-03/#", 1)])
    client.client.subscribe([("cmd/gh-04/#", 1)])
    client.client.subscribe([("farm/#", 0)])
    deadline = time.monotonic() + 5
    while len(granted) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    client.close()
    assert granted[0] == ["Granted QoS 1"]
    assert granted[1:] == [["Unspecified error"], ["Unspecified error"]]


def test_publishing_to_another_devices_topic_is_refused_and_never_reaches_the_lake(
    secured: Sensorlake,
) -> None:
    forged, honest = uuid.uuid4().hex, uuid.uuid4().hex
    client = attempt(secured, "gh-03")
    assert client.result == "connected"
    # nats-server acknowledges the refused QoS 1 publish (MQTT 3.1.1 cannot say no) and drops it.
    client.client.publish("farm/gh-04/telemetry", orjson.dumps({"marker": forged}), qos=1)
    client.client.publish("gh-04/x", orjson.dumps({"marker": forged}), qos=0)
    time.sleep(0.5)
    if client.disconnected.is_set():  # some servers drop the connection; reconnect to go on
        client = attempt(secured, "gh-03")
    client.publish("farm/gh-03/telemetry", {"marker": honest})
    client.close()
    assert secured.wait_rows(
        f"SELECT device_id FROM telemetry WHERE marker = '{honest}'", 1) == [["gh-03"]]
    assert secured.rows(f"SELECT count(*) FROM telemetry WHERE marker = '{forged}'") == [[0]]
    assert secured.rows(
        f"SELECT count(*) FROM dead_letter WHERE CAST(raw AS VARCHAR) LIKE '%{forged}%'") == [[0]]


def test_no_certificate_a_foreign_ca_and_plain_mqtt_are_refused(
    secured: Sensorlake, tmp_path: Path,
) -> None:
    ca = bundle(secured, "gh-01") / "ca.crt"
    assert Attempt(secured.mqtts_port, ca, None, None).outcome().startswith("refused")
    foreign = CertificateAuthority(tmp_path / "foreign")
    forged = foreign.issue_device("gh-01")  # right name, wrong signer
    (tmp_path / "forged.crt").write_bytes(forged.cert_pem)
    write_private(tmp_path / "forged.key", forged.key_pem)
    assert Attempt(secured.mqtts_port, ca, tmp_path / "forged.crt",
                   tmp_path / "forged.key").outcome().startswith("refused")
    # Once devices exist, plain MQTT takes a device token, never an anonymous client.
    assert Plain(secured.mqtt_port, None, None).outcome() == "refused: Not authorized"
    assert Plain(secured.mqtt_port, "gh-01", "").outcome() == "refused: Not authorized"


def test_revoking_disconnects_the_device_and_rotating_replaces_its_certificate(
    secured: Sensorlake, tmp_path: Path,
) -> None:
    connected = attempt(secured, "gh-04")
    assert connected.result == "connected"
    connected.client.reconnect_delay_set(30, 30)  # no reconnect within the test
    bystander = attempt(secured, "gh-01")  # the reload must not drop other devices
    assert bystander.result == "connected"
    old = tmp_path / "old"
    old.mkdir()
    for name in ("device.crt", "device.key"):
        (old / name).write_bytes((bundle(secured, "gh-04") / name).read_bytes())
    secured.cli("devices", "revoke", "gh-04")
    assert connected.disconnected.wait(10), "a revoked device stays connected"
    connected.close()
    assert not bystander.disconnected.is_set()
    bystander.publish("farm/gh-01/telemetry", {"after_reload": 1})
    bystander.close()
    assert attempt(secured, "gh-04").outcome().startswith("refused")
    secured.cli("devices", "rotate", "gh-04")
    deadline = time.monotonic() + 10
    while (result := attempt(secured, "gh-04").outcome()) != "connected":
        assert time.monotonic() < deadline, result
        time.sleep(0.3)
    ca = bundle(secured, "gh-04") / "ca.crt"
    assert Attempt(secured.mqtts_port, ca, old / "device.crt",
                   old / "device.key").outcome().startswith("refused")
    shown = secured.cli("devices", "list", "--format", "json").stdout
    devices = {row[0]: row for row in orjson.loads(shown)["rows"]}
    assert devices["gh-04"][1] == "active"
    assert devices["gh-01"][2] == {"type": "dht22"}
    assert devices["gh-01"][4] >= 1  # readings seen from it


def test_ca_key_is_private(secured: Sensorlake) -> None:
    assert os.stat(secured.data_dir / "ca" / "ca.key").st_mode & 0o777 == 0o600
    assert "BEGIN" not in secured.log()


def test_registering_the_first_device_while_up_runs_switches_mqtt_to_tls(tmp_path: Path) -> None:
    lake = Sensorlake(tmp_path / "data").start()
    try:
        lake.mqtt_publish("farm/anon/telemetry", [b'{"v": 1}'])  # plain and anonymous, loopback
        lake.cli("devices", "register", "gh-09")
        deadline = time.monotonic() + 20
        while (result := attempt(lake, "gh-09").outcome()) != "connected":
            assert time.monotonic() < deadline, result
            time.sleep(0.3)
        assert lake.wait_rows("SELECT v FROM telemetry WHERE device_id = 'anon'", 1) == [[1.0]]
    finally:
        lake.stop()


def test_a_non_loopback_address_without_devices_refuses_to_start(tmp_path: Path) -> None:
    env = dict(os.environ, SENSORLAKE_STREAM__PORT=str(free_port()))
    done = subprocess.run(
        [*SENSORLAKE, "up", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "data"),
         "--http-port", str(free_port()), "--mqtt-port", str(free_port())],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert done.returncode == 1
    assert "server.host" in done.stderr
    assert "sensorlake devices register" in done.stderr
    assert "--insecure" in done.stderr


class Plain:
    """A plain MQTT connection with username and token, to the token gate."""

    def __init__(self, port: int, username: str | None, password: str | None) -> None:
        self.result = ""
        self.disconnected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"t-{uuid.uuid4().hex[:8]}")
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(30, 30)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: setattr(
            self, "result", "connected" if str(rc) == "Success" else f"refused: {rc}")
        self.client.on_disconnect = lambda *_: self.disconnected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        deadline = time.monotonic() + 5
        while not self.result and time.monotonic() < deadline:
            time.sleep(0.02)

    def outcome(self) -> str:
        close(self.client)
        return self.result


def token_for(lake: Sensorlake, name: str) -> str:
    printed = lake.cli("devices", "token", name).stdout.splitlines()
    return printed[1].strip()


def test_a_token_device_is_confined_like_a_certificate_device(secured: Sensorlake) -> None:
    token = token_for(secured, "tok-1")
    assert token not in secured.log()
    deadline = time.monotonic() + 10
    while (client := Plain(secured.mqtt_port, "tok-1", token)).result != "connected":
        assert time.monotonic() < deadline, client.result  # the reload takes up to a second
        client.outcome()
        time.sleep(0.3)
    honest, forged = uuid.uuid4().hex, uuid.uuid4().hex
    client.client.publish("farm/gh-01/telemetry", orjson.dumps({"marker": forged}), qos=1)
    info = client.client.publish("farm/tok-1/telemetry", orjson.dumps({"marker": honest}), qos=1)
    info.wait_for_publish(10)
    assert secured.wait_rows(
        f"SELECT device_id FROM telemetry WHERE marker = '{honest}'", 1) == [["tok-1"]]
    assert secured.rows(f"SELECT count(*) FROM telemetry WHERE marker = '{forged}'") == [[0]]

    assert Plain(secured.mqtt_port, "tok-1", token + "x").outcome() == "refused: Not authorized"
    assert Plain(secured.mqtt_port, "tok-2", token).outcome() == "refused: Not authorized"
    assert Plain(secured.mqtt_port, "nobody", token).outcome() == "refused: Not authorized"
    done = subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(secured.mqtt_port), "-u", "tok-1",
         "-P", token, "-q", "1", "-t", "farm/tok-1/telemetry", "-m", '{"via": 7}'],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert secured.wait_rows("SELECT via FROM telemetry WHERE via = 7", 1) == [[7.0]]

    secured.cli("devices", "revoke", "tok-1")
    assert client.disconnected.wait(10), "a revoked token device stays connected"
    client.outcome()
    assert Plain(secured.mqtt_port, "tok-1", token).outcome() == "refused: Not authorized"


def test_insecure_allows_a_non_loopback_address_without_devices(tmp_path: Path) -> None:
    lake = Sensorlake(tmp_path / "data", SENSORLAKE_SERVER__HOST="0.0.0.0",
                      SENSORLAKE_SERVER__INSECURE="true").start()
    try:
        lake.mqtt_publish("farm/open-1/telemetry", [b'{"v": 2}'])
        sql = "SELECT v FROM telemetry WHERE device_id = 'open-1'"
        deadline = time.monotonic() + 10
        while not orjson.loads(lake.cli("query", sql, "--format", "json").stdout)["rows"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        # The HTTP API on a non-loopback address still wants a key.
        assert httpx.post(f"{lake.url}/api/v1/query", json={"sql": "SELECT 1"},
                          timeout=10).status_code == 401
    finally:
        lake.stop()


def test_rotating_the_ca_as_docs_security_md_describes(tmp_path: Path) -> None:
    lake = Sensorlake(tmp_path / "data")
    lake.cli("devices", "register", "gh-01", "gh-02")
    old_bundle = tmp_path / "old-bundle"
    lake.start()
    try:
        assert attempt(lake, "gh-01").outcome() == "connected"
    finally:
        lake.stop()
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in ("ca", "tls", "bundles"):
        (lake.data_dir / name).rename(aside / name)
    (aside / "bundles" / "gh-01").rename(old_bundle)
    lake.cli("devices", "rotate", "gh-01")
    lake.cli("devices", "rotate", "gh-02")
    assert (lake.data_dir / "ca" / "ca.crt").read_bytes() != (aside / "ca" / "ca.crt").read_bytes()
    lake.start()
    try:
        assert attempt(lake, "gh-01").outcome() == "connected"
        assert attempt(lake, "gh-02").outcome() == "connected"
        # A device still holding the old bundle is refused: its CA is no longer trusted.
        assert Attempt(lake.mqtts_port, old_bundle / "ca.crt", old_bundle / "device.crt",
                       old_bundle / "device.key").outcome().startswith("refused")
    finally:
        lake.stop()


def test_simulate_sends_as_a_bundle_device_and_as_a_token_device(secured: Sensorlake) -> None:
    done = secured.cli("simulate", "--bundle", str(bundle(secured, "gh-01")), "--count", "3",
                       "--interval", "0.05", "--anomaly-rate", "0")
    assert "sent 3 readings, acked 3, failed 0" in done.stdout
    token = token_for(secured, "tok-2")
    deadline = time.monotonic() + 10
    while True:  # the token's certificate reaches nats-server with the next reload
        done = secured.cli("simulate", "--username", "tok-2", "--token", token, "--count", "3",
                           "--mqtt-port", str(secured.mqtt_port),
                           "--interval", "0.05", "--anomaly-rate", "0", check=False)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "sent 3 readings, acked 3, failed 0" in done.stdout, done.stderr
    rows = secured.wait_rows("SELECT device_id, count(*) FROM telemetry WHERE device_id IN "
                             "('gh-01', 'tok-2') AND co2 IS NOT NULL GROUP BY 1 ORDER BY 1", 2)
    assert rows[1] == ["tok-2", 3]
    assert rows[0][1] >= 3
