"""The device registry and its CLI, without a running pipeline."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
from cryptography import x509

from sensorlake.devices.ca import device_subject
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
