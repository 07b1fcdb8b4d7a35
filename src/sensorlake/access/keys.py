"""API keys for the HTTP API: created and revoked by the CLI, checked by `up`.

A key is `slk_<id>_<secret>`. The id is public (it names the key in `keys list`, logs and error
messages) and lets a request find its row without scanning; the secret is 256 random bits, so a
plain SHA-256 of the whole key is as good as a slow password hash and costs a microsecond per
request. Only that hash is stored: a copy of registry.db cannot be used to call the API.

The keys live in their own table of `<data_dir>/registry.db`, the file the device registry also
uses, so one file holds everything that decides who may send what. Every connection sets WAL so
the CLI can write while `up` reads.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import re
import secrets
import sqlite3
import string
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sensorlake.errors import AccessError, ApiKeyError, KeyRegistryError
from sensorlake.registrydb import registry_db, registry_path
from sensorlake.topics import BAD_TOPIC_CHARS

KEY_PREFIX = "slk"
_ID_BYTES = 6
_SECRET_CHARS = 43  # 43 base62 characters hold 256 bits
_ALPHABET = string.ascii_letters + string.digits  # no '-' or '_': a double click selects it all
_KEY_RE = re.compile(
    rf"^{KEY_PREFIX}_([0-9a-f]{{{2 * _ID_BYTES}}})_[A-Za-z0-9]{{{_SECRET_CHARS}}}$"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    key_sha256 TEXT NOT NULL,
    scope TEXT NOT NULL,
    device TEXT,
    name TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
)
"""
_COLUMNS = "id, key_sha256, scope, device, name, created_at, last_used_at, revoked_at"


class Scope(enum.StrEnum):
    """What a key may do. Kept to three so that choosing one needs no documentation lookup."""

    ingest = "ingest"
    """POST /api/v1/ingest only: what a device or gateway needs, and nothing it could leak."""
    read = "read"
    """Queries, tables and metrics: dashboards and analysts."""
    admin = "admin"
    """Everything, including routes added later that declare no scope."""

    def allows(self, required: Scope) -> bool:
        return self is Scope.admin or self is required


@dataclass(frozen=True)
class ApiKey:
    """A key as `keys list` shows it and as a request is authorised with: never the secret."""

    id: str
    scope: Scope
    device: str | None
    name: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class KeySet:
    """Every key at one moment, with the hashes needed to check a presented key."""

    keys: Mapping[str, tuple[ApiKey, str]] = field(default_factory=dict)

    @property
    def any_active(self) -> bool:
        return any(key.active for key, _ in self.keys.values())

    def authenticate(self, presented: str) -> ApiKey:
        """The key a request presents, if it exists and is not revoked.

        A wrong secret and an unknown id get the same answer, so guessing learns nothing; only
        the holder of the real key is told that it was revoked.
        """
        match = _KEY_RE.match(presented)
        entry = self.keys.get(match.group(1)) if match else None
        if entry is None or not hmac.compare_digest(entry[1], hash_key(presented)):
            raise AccessError(
                "the API key is not valid",
                hint="check that it was copied whole (it looks like slk_<id>_<secret>); "
                "`sensorlake keys list` shows the keys that exist, `sensorlake keys create` "
                "makes a new one",
            )
        key = entry[0]
        if not key.active:
            raise AccessError(
                f"API key {key.id} was revoked at {key.revoked_at}",
                hint=f"create a new one with `sensorlake keys create --scope {key.scope}`",
            )
        return key


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_device_name(name: str) -> str:
    """A bound device is matched against one topic level, so it must be able to be one."""
    if not name or len(name) > 128 or "/" in name or BAD_TOPIC_CHARS.search(name):
        raise ApiKeyError(
            f"device name {name!r} cannot be a topic level",
            hint="use 1–128 characters without '/', '+', '#', '*', '>' or spaces, as in the "
            "device's topic (farm/<device>/telemetry)",
        )
    return name


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _row(row: tuple[str, ...]) -> tuple[ApiKey, str]:
    key_id, digest, scope, device, name, created, used, revoked = row
    return ApiKey(key_id, Scope(scope), device, name, created, used, revoked), digest


class KeyStore:
    """The api_keys table. Short-lived connections, so the CLI and `up` never hold the file."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = registry_path(data_dir)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            with registry_db(self.data_dir, _SCHEMA) as db:
                yield db
        except sqlite3.Error as exc:
            raise KeyRegistryError(
                f"cannot use the key registry {self.path}: {exc}",
                hint="check that the data dir is writable and the file is a SQLite database",
            ) from None

    def create(self, scope: Scope, *, device: str | None = None, name: str = ""
               ) -> tuple[ApiKey, str]:
        """A new key and its one plain-text copy, which the caller shows once and forgets."""
        if device is not None:
            check_device_name(device)
            if scope is not Scope.ingest:
                raise ApiKeyError(
                    f"a key bound to a device must have scope ingest, not {scope}",
                    hint="drop --device, or use --scope ingest",
                )
        key_id = secrets.token_hex(_ID_BYTES)
        secret = "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_CHARS))
        plain = f"{KEY_PREFIX}_{key_id}_{secret}"
        key = ApiKey(key_id, scope, device, name, _now(), None, None)
        with self._db() as db:
            db.execute(
                f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key.id, hash_key(plain), str(scope), device, name, key.created_at, None, None),
            )
        return key, plain

    def keys(self) -> list[ApiKey]:
        return [key for key, _ in self.load().keys.values()]

    def get(self, key_id: str) -> ApiKey:
        entry = self.load().keys.get(key_id)
        if entry is None:
            raise ApiKeyError(f"no API key with id {key_id!r}",
                              hint="`sensorlake keys list` shows the ids")
        return entry[0]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoked keys stay listed, so `keys list` still tells what a past id was."""
        key = self.get(key_id)
        if key.active:
            with self._db() as db:
                db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                           (_now(), key_id))
        return self.get(key_id)

    def load(self) -> KeySet:
        """Every key. With no registry file there are none, and reading does not create one:
        `up` on an untouched data dir leaves it untouched."""
        if not self.path.exists():
            return KeySet()
        with self._db() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY rowid")
            return KeySet({entry[0].id: entry for entry in map(_row, rows)})

    def touch(self, last_used: Mapping[str, str]) -> None:
        """Record when keys were last used ({id: ISO time}), many in one write."""
        with self._db() as db:
            db.executemany("UPDATE api_keys SET last_used_at = ? WHERE id = ?",
                           [(when, key_id) for key_id, when in last_used.items()])
