"""The device registry and its CLI, without a running pipeline."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import orjson
import pytest
from cryptography import x509

from sensorlake.config import Config
from sensorlake.devices.ca import device_subject
from sensorlake.devices.policy import load_policy
from sensorlake.devices.registry import Registry
from sensorlake.errors import DeviceError
from tests.conftest import SENSORLAKE


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SENSORLAKE, "devices", *args, "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))


def test_bulk_registration_from_count_and_csv_with_attributes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "fleet.csv").write_text("name,type,location\nbarn-a,co2,north\nbarn-b,dht22,\n")
    assert cli(data, "register", "--count", "3", "--prefix", "pi").returncode == 0
    assert cli(data, "register", "--csv", str(tmp_path / "fleet.csv"),
               "--attr", "site=farm1").returncode == 0
    listed = orjson.loads(cli(data, "list", "--format", "json").stdout)
    rows = {row[0]: row for row in listed["rows"]}
    assert sorted(rows) == ["barn-a", "barn-b", "pi-001", "pi-002", "pi-003"]
    assert rows["barn-a"][2] == {"type": "co2", "location": "north", "site": "farm1"}
    assert rows["barn-b"][2] == {"type": "dht22", "site": "farm1"}
    folder = data / "bundles" / "barn-a"
    assert sorted(p.name for p in folder.iterdir()) == [
        "ca.crt", "device.crt", "device.key", "endpoint.json", "publish.py", "publish.sh"]
    cert = x509.load_pem_x509_certificate((folder / "device.crt").read_bytes())
    serial = cli(data, "show", "barn-a", "--format", "json").stdout
    shown = orjson.loads(serial)
    # As nats-server names the subject when it maps a certificate to its device.
    subject = cert.subject.rfc4514_string({x509.NameOID.SERIAL_NUMBER: "SERIALNUMBER"})
    assert subject == device_subject("barn-a", shown["certificate_serial"])
    assert orjson.loads((folder / "endpoint.json").read_bytes())["may_publish"] == ["+/barn-a/#"]


def test_mistakes_get_a_clear_error_and_change_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert cli(data, "register", "gh-01").returncode == 0
    cases = [
        (("register", "gh-01"), "already registered: gh-01"),
        (("register", "bad/name"), "device name 'bad/name' is not usable"),
        (("register", "ok-1", "has space"), "is not usable"),
        (("register",), "no device to register"),
        (("register", "x-1", "--attr", "novalue"), "is not KEY=VALUE"),
        (("show", "nope"), "no device named 'nope'"),
        (("revoke", "nope"), "no device named 'nope'"),
    ]
    for args, message in cases:
        done = cli(data, *args)
        assert done.returncode == 1, args
        assert message in done.stderr, (args, done.stderr)
    listed = orjson.loads(cli(data, "list", "--format", "json").stdout)
    assert [row[0] for row in listed["rows"]] == ["gh-01"]  # "ok-1" was not half-registered
    assert cli(data, "revoke", "gh-01").returncode == 0
    again = cli(data, "revoke", "gh-01")
    assert again.returncode == 1
    assert "already revoked" in again.stderr


def test_a_device_becomes_a_gateway_and_back(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "data")
    registry.register(["gh-01"])
    registry.register(["gw-1"], gateway=True)
    assert [(d.name, d.gateway) for d in registry.devices()] == [("gh-01", False), ("gw-1", True)]
    before = registry.get("gh-01")
    made = registry.set_gateway("gh-01", True)
    assert made.gateway
    assert registry.get("gh-01").gateway
    assert made.cert_serial == before.cert_serial  # its certificate stays valid
    assert registry.set_gateway("gh-01", True) == made  # repeating it changes nothing
    assert not registry.set_gateway("gw-1", False).gateway
    assert [(d.name, d.gateway) for d in registry.devices()] == [("gh-01", True), ("gw-1", False)]


def test_only_active_gateways_may_write_for_others(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data")
    registry = Registry(config.data_dir)
    assert not load_policy(config).enforced  # no device: MQTT is anonymous, nothing to check
    registry.register(["gh-01", "gw-1", "gw-2"])
    registry.set_gateway("gw-1", True)
    registry.set_gateway("gw-2", True)
    registry.revoke("gw-2")
    policy = load_policy(config)
    assert policy.enforced
    assert policy.gateways == frozenset({"gw-1"})
    assert policy.refusal("gw-1", "s-7") is None
    assert policy.refusal("gh-01", "s-7") is not None


def test_setting_gateway_on_an_unknown_device_is_a_clear_error(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "data")
    registry.register(["gh-01"])
    with pytest.raises(DeviceError, match="no device named 'gh-02'") as raised:
        registry.set_gateway("gh-02", True)
    assert raised.value.hint is not None
    assert "sensorlake devices register gh-02 --gateway" in raised.value.hint
    with pytest.raises(DeviceError, match="is not usable"):
        registry.set_gateway("bad/name", True)
    assert not registry.get("gh-01").gateway


def test_a_registry_of_an_earlier_version_gains_the_gateway_column(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "registry.db") as db:
        db.execute(
            "CREATE TABLE devices (name TEXT PRIMARY KEY, attributes TEXT NOT NULL DEFAULT '{}',"
            " status TEXT NOT NULL, cert_serial TEXT NOT NULL, cert_not_after TEXT NOT NULL,"
            " created_at TEXT NOT NULL, updated_at TEXT NOT NULL, token_hash TEXT,"
            " token_cert_serial TEXT)")
        db.execute("INSERT INTO devices VALUES ('old-1', '{}', 'active', 'ab', "
                   "'2030-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00', "
                   "'2024-01-01T00:00:00+00:00', NULL, NULL)")
    db.close()
    registry = Registry(data)
    assert not registry.get("old-1").gateway
    assert registry.set_gateway("old-1", True).gateway


def test_the_cli_registers_and_switches_gateways_and_shows_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = cli(data, "register", "gw-1", "gw-2", "--gateway")
    assert done.returncode == 0, done.stderr
    assert "registered gw-1 (gateway)" in done.stdout
    assert cli(data, "register", "gh-01").returncode == 0
    done = cli(data, "gateway", "gh-01")
    assert done.returncode == 0, done.stderr
    assert "gh-01 is now a gateway" in done.stdout
    assert "is a gateway already" in cli(data, "gateway", "gh-01").stdout
    done = cli(data, "gateway", "gw-2", "--off")
    assert done.returncode == 0, done.stderr
    assert "gw-2 is no longer a gateway" in done.stdout

    listed = orjson.loads(cli(data, "list", "-f", "json").stdout)
    assert listed["columns"][-1] == "gateway"
    assert {row[0]: row[-1] for row in listed["rows"]} == {
        "gh-01": True, "gw-1": True, "gw-2": False}
    assert orjson.loads(cli(data, "show", "gw-1", "-f", "json").stdout)["gateway"] is True
    assert orjson.loads(cli(data, "show", "gw-2", "-f", "json").stdout)["gateway"] is False
    table = cli(data, "show", "gw-1").stdout
    assert "gateway" in table
    assert "True" in table
    csv_rows = cli(data, "list", "-f", "csv").stdout.splitlines()
    assert csv_rows[0].endswith(",gateway")
    assert csv_rows[1].startswith("gh-01,")
    assert csv_rows[1].endswith(",True")

    unknown = cli(data, "gateway", "nope")
    assert unknown.returncode == 1
    assert "no device named 'nope'" in unknown.stderr
    assert "devices register nope --gateway" in unknown.stderr
