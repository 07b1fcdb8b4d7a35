"""The device registry: the single source of truth for which devices exist and may connect.

It is a SQLite file in the data dir (`registry.db`), so the CLI can change it while `up` runs;
`up` renders the nats-server configuration from it and reloads the server when the rendering
changes. Certificates are issued here too, so a row and its certificate never disagree.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from sensorlake.devices.ca import CertificateAuthority, IssuedCertificate
from sensorlake.errors import DeviceError
from sensorlake.registrydb import registry_db, registry_path

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ACTIVE = "active"
REVOKED = "revoked"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    name TEXT PRIMARY KEY,
    attributes TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    cert_serial TEXT NOT NULL,
    cert_not_after TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    token_hash TEXT,
    token_cert_serial TEXT,
    gateway INTEGER NOT NULL DEFAULT 0
)
"""
_COLUMNS = ("name, attributes, status, cert_serial, cert_not_after, created_at, updated_at,"
            " token_hash, token_cert_serial, gateway")


@dataclass(frozen=True)
class Device:
    name: str
    attributes: dict[str, str]
    status: str
    cert_serial: str
    cert_not_after: str
    created_at: str
    updated_at: str
    token_hash: str | None = None
    token_cert_serial: str | None = None
    gateway: bool = False
    """May name other devices in its readings (it relays for them); others write only as
    themselves."""

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def token_matches(self, token: str) -> bool:
        if not self.active or not self.token_hash or not token:
            return False
        return hmac.compare_digest(self.token_hash, hash_token(token))


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise DeviceError(
            f"device name {name!r} is not usable",
            hint="use 1–64 letters, digits, '-' or '_', starting with a letter or digit "
            "(it becomes a topic level and the certificate's name)",
        )
    return name


def hash_token(token: str) -> str:
    """Tokens are random 256-bit secrets, so one SHA-256 is as good as a slow hash here."""
    return hashlib.sha256(token.encode()).hexdigest()


def _add_gateway_column(db: sqlite3.Connection) -> None:
    """Registries of earlier versions have no gateway column; their devices are not gateways."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(devices)")}
    if "gateway" not in columns:
        db.execute("ALTER TABLE devices ADD COLUMN gateway INTEGER NOT NULL DEFAULT 0")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Registry:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = registry_path(data_dir)

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return registry_db(self.data_dir, _SCHEMA, migrate=_add_gateway_column)

    @property
    def ca(self) -> CertificateAuthority:
        return CertificateAuthority(self.data_dir / "ca")

    def exists(self) -> bool:
        """Whether any device was ever registered (without creating the file)."""
        if not self.path.exists():
            return False
        with self._db() as db:
            return db.execute("SELECT 1 FROM devices LIMIT 1").fetchone() is not None

    def devices(self, name: str | None = None) -> list[Device]:
        """Every device, or the one named (an empty list when there is none)."""
        if not self.path.exists():
            return []
        where, args = ("WHERE name = ?", (name,)) if name is not None else ("", ())
        with self._db() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM devices {where} ORDER BY name", args).fetchall()
        return [Device(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9]))
                for r in rows]

    def active(self) -> list[Device]:
        return [d for d in self.devices() if d.active]

    def get(self, name: str) -> Device:
        found = self.devices(name)
        if not found:
            raise DeviceError(f"no device named {name!r}",
                              hint="`sensorlake devices list` shows them")
        return found[0]

    def register(
        self, names: list[str], attributes: dict[str, dict[str, str]] | None = None,
        *, gateway: bool = False,
    ) -> list[tuple[Device, IssuedCertificate]]:
        """Register new devices, each with a fresh certificate; all or none."""
        for name in names:
            check_name(name)
        if len(set(names)) != len(names):
            raise DeviceError("a device name is listed twice", hint="list each name once")
        existing = {d.name for d in self.devices()}
        taken = sorted(existing.intersection(names))
        if taken:
            raise DeviceError(
                f"already registered: {', '.join(taken[:5])}{' …' if len(taken) > 5 else ''}",
                hint="choose other names, or `sensorlake devices rotate NAME` for a new "
                "certificate",
            )
        ca = self.ca
        issued = [(name, ca.issue_device(name)) for name in names]
        now = _now()
        with self._db() as db:
            db.executemany(
                f"INSERT INTO devices ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)",
                [
                    (name, json.dumps((attributes or {}).get(name, {})), ACTIVE, cert.serial,
                     cert.not_after.isoformat(timespec="seconds"), now, now, int(gateway))
                    for name, cert in issued
                ],
            )
        return [(self.get(name), cert) for name, cert in issued]

    def revoke(self, name: str) -> Device:
        device = self.get(name)
        if not device.active:
            raise DeviceError(f"device {name!r} is already revoked",
                              hint="`sensorlake devices rotate NAME` gives it a new certificate")
        with self._db() as db:
            db.execute("UPDATE devices SET status = ?, updated_at = ? WHERE name = ?",
                       (REVOKED, _now(), name))
        return self.get(name)

    def rotate(self, name: str) -> tuple[Device, IssuedCertificate]:
        """A new certificate for the device; the old one stops working at the next reload.
        Rotating a revoked device reinstates it with the new certificate only."""
        self.get(name)
        cert = self.ca.issue_device(name)
        with self._db() as db:
            db.execute(
                "UPDATE devices SET status = ?, cert_serial = ?, cert_not_after = ?,"
                " updated_at = ? WHERE name = ?",
                (ACTIVE, cert.serial, cert.not_after.isoformat(timespec="seconds"), _now(), name),
            )
        return self.get(name), cert

    def set_gateway(self, name: str, on: bool) -> Device:
        """Make a device a gateway, which may write readings for other devices, or a plain
        device again. Setting what is already set changes nothing, so scripts may repeat it."""
        found = self.devices(check_name(name))
        if not found:
            raise DeviceError(
                f"no device named {name!r}",
                hint=f"`sensorlake devices register {name} --gateway` registers it as a "
                "gateway; `sensorlake devices list` shows the devices there are",
            )
        device = found[0]
        if device.gateway == on:
            return device
        with self._db() as db:
            db.execute("UPDATE devices SET gateway = ?, updated_at = ? WHERE name = ?",
                       (int(on), _now(), name))
        return self.get(name)

    def issue_token(self, name: str) -> tuple[str, IssuedCertificate]:
        """A new username + token credential for a device that cannot hold a certificate;
        replaces any earlier token. Returns the token (shown once) and the certificate the
        token gate presents to nats-server on the device's behalf."""
        device = self.get(name)
        if not device.active:
            raise DeviceError(f"device {name!r} is revoked",
                              hint=f"`sensorlake devices rotate {name}` reinstates it first")
        token = secrets.token_urlsafe(32)
        cert = self.ca.issue_device(name)
        with self._db() as db:
            db.execute(
                "UPDATE devices SET token_hash = ?, token_cert_serial = ?, updated_at = ?"
                " WHERE name = ?", (hash_token(token), cert.serial, _now(), name))
        return token, cert
