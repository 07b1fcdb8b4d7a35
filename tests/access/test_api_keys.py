"""API keys on a running `sensorlake up` once keys exist: scopes, device binding, revocation,
and that the keys themselves never show up anywhere."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest

from sensorlake.access.keys import KeyStore, Scope
from tests.access.helpers import call, ingest, query, wait_rows, wait_status
from tests.conftest import Sensorlake

BOUND_DEVICE = "gh-bound"


@dataclass(frozen=True)
class Keys:
    admin: str
    read: str
    ingest: str
    bound: str
    doomed: str

    def all(self) -> list[str]:
        return [self.admin, self.read, self.ingest, self.bound, self.doomed]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sensorlake, Keys]]:
    """One `up` for the module, started after its keys were created."""
    instance = Sensorlake(tmp_path_factory.mktemp("keys") / "data")
    store = KeyStore(instance.data_dir)
    keys = Keys(
        admin=store.create(Scope.admin, name="ops")[1],
        read=store.create(Scope.read, name="dashboard")[1],
        ingest=store.create(Scope.ingest, name="gateway")[1],
        bound=store.create(Scope.ingest, device=BOUND_DEVICE)[1],
        doomed=store.create(Scope.read, name="to revoke")[1],
    )
    instance.start()
    yield instance, keys
    if instance.proc is not None:
        instance.stop()


def key_id(key: str) -> str:
    return key.split("_")[1]


def test_without_a_valid_key_every_api_route_is_401(keyed: tuple[Sensorlake, Keys],
                                                    device: str) -> None:
    lake, keys = keyed
    reply = ingest(lake, f"farm/{device}/t", {"x": 1}, None)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert reply.json()["error"] == "this request needs an API key"
    assert "Authorization: Bearer <key>" in reply.json()["hint"]
    assert "sensorlake keys create --scope ingest" in reply.json()["hint"]
    for path in ("/api/v1/tables", "/api/v1/tables/telemetry", "/metrics", "/api/v1/nope"):
        assert call(lake, "GET", path).status_code == 401, path
    assert query(lake, "SELECT 1", None).status_code == 401
    wrong_secret = keys.read[:-4] + ("AAAA" if not keys.read.endswith("AAAA") else "BBBB")
    for bad in ("nonsense", f"slk_{key_id(keys.read)}_", wrong_secret):
        reply = call(lake, "GET", "/api/v1/tables", bad)
        assert reply.status_code == 401
        assert reply.json()["error"] == "the API key is not valid"
        assert bad not in reply.text
    basic = call(lake, "GET", "/api/v1/tables", headers={"Authorization": f"Basic {keys.read}"})
    assert basic.status_code == 401
    assert "Bearer" in basic.json()["error"]
    assert call(lake, "GET", "/healthz").status_code == 200  # stays open for supervisors
    assert call(lake, "GET", "/api/v1/nope", keys.read).status_code == 404
    time.sleep(0.3)
    rows = wait_rows(lake, f"SELECT count(*) FROM telemetry WHERE device_id = '{device}'", 1,
                     keys.admin)
    assert rows == [[0]]


def test_a_read_key_queries_and_lists_but_cannot_ingest(keyed: tuple[Sensorlake, Keys],
                                                       device: str) -> None:
    lake, keys = keyed
    assert query(lake, "SELECT 1 AS one", keys.read).json()["rows"] == [[1]]
    assert "telemetry" in call(lake, "GET", "/api/v1/tables", keys.read).json()["tables"]
    described = call(lake, "GET", "/api/v1/tables/telemetry", keys.read)
    assert described.json()["table"] == "telemetry"
    assert "sensorlake_readings_ingested_total" in call(lake, "GET", "/metrics", keys.read).text
    reply = ingest(lake, f"farm/{device}/t", {"x": 1}, keys.read)
    assert reply.status_code == 403
    body = reply.json()
    assert body["error"] == (f"API key {key_id(keys.read)} has scope read, and "
                             "POST /api/v1/ingest needs scope ingest")
    assert "sensorlake keys create --scope ingest" in body["hint"]


def test_an_ingest_key_ingests_but_cannot_read(keyed: tuple[Sensorlake, Keys], device: str
                                              ) -> None:
    lake, keys = keyed
    reply = ingest(lake, f"farm/{device}/t", [{"x": 1}, {"x": 2}], keys.ingest)
    assert reply.json() == {"accepted": 2, "rejected": []}
    reply = query(lake, "SELECT 1", keys.ingest)
    assert reply.status_code == 403
    assert "sensorlake keys create --scope read" in reply.json()["hint"]
    for path in ("/api/v1/tables", "/api/v1/tables/telemetry", "/metrics"):
        assert call(lake, "GET", path, keys.ingest).status_code == 403, path
    rows = wait_rows(lake, f"SELECT x FROM telemetry WHERE device_id = '{device}' ORDER BY x", 2,
                     keys.admin)
    assert rows == [[1.0], [2.0]]


def test_idempotency_keys_are_per_api_key(keyed: tuple[Sensorlake, Keys], device: str) -> None:
    lake, keys = keyed
    headers = {"Idempotency-Key": f"batch-{device}"}
    for key in (keys.ingest, keys.ingest, keys.admin):  # a retry, then another key's batch
        reply = call(lake, "POST", "/api/v1/ingest", key, params={"topic": f"farm/{device}/t"},
                     json={"n": 1}, headers=headers)
        assert reply.json() == {"accepted": 1, "rejected": []}
    sql = f"SELECT count(*) FROM telemetry WHERE device_id = '{device}' HAVING count(*) >= 2"
    assert wait_rows(lake, sql, 1, keys.admin) == [[2]]
    time.sleep(0.3)
    assert wait_rows(lake, sql, 1, keys.admin) == [[2]]


def test_a_device_bound_key_writes_only_as_its_device(keyed: tuple[Sensorlake, Keys],
                                                     device: str) -> None:
    lake, keys = keyed
    reply = ingest(lake, f"farm/{device}/telemetry", {"n": 0}, keys.bound)
    assert reply.status_code == 403
    assert f"may only write as device '{BOUND_DEVICE}'" in reply.json()["error"]
    assert f"farm/{BOUND_DEVICE}/telemetry" in reply.json()["hint"]
    assert ingest(lake, "farm", {"n": 0}, keys.bound).status_code == 403
    marker = device  # a value no other test writes, to find this request's rows
    batch = [
        {"n": 1, "marker": marker},
        {"n": 2, "marker": marker, "device_id": device},
        "not an object",
        {"n": 3, "marker": marker, "deviceId": BOUND_DEVICE},
        {"n": 4, "marker": marker, "device": device},
    ]
    reply = ingest(lake, f"farm/{BOUND_DEVICE}/telemetry", batch, keys.bound)
    assert reply.status_code == 200
    assert reply.json()["accepted"] == 2
    rejected = reply.json()["rejected"]
    assert [r["index"] for r in rejected] == [1, 2, 4]
    assert f"names device '{device}'" in rejected[0]["error"]
    assert BOUND_DEVICE in rejected[0]["error"]
    only_foreign = ingest(lake, f"farm/{BOUND_DEVICE}/telemetry", [{"device_id": device}],
                          keys.bound)
    assert only_foreign.status_code == 400
    assert only_foreign.json()["accepted"] == 0
    sql = f"SELECT device_id, n FROM telemetry WHERE marker = '{marker}' ORDER BY n"
    rows = wait_rows(lake, sql, 2, keys.admin)
    time.sleep(0.3)  # one stream message carried the batch: nothing else is still on its way
    assert wait_rows(lake, sql, 2, keys.admin) == rows == [[BOUND_DEVICE, 1.0],
                                                           [BOUND_DEVICE, 3.0]]
    foreign = wait_rows(lake, f"SELECT count(*) FROM telemetry WHERE device_id = '{device}'", 1,
                        keys.admin)
    assert foreign == [[0]]


def test_a_revoked_key_is_refused_within_a_second(keyed: tuple[Sensorlake, Keys]) -> None:
    lake, keys = keyed
    assert call(lake, "GET", "/api/v1/tables", keys.doomed).status_code == 200
    lake.cli("keys", "revoke", key_id(keys.doomed))
    reply, waited = wait_status(lake, "GET", "/api/v1/tables", keys.doomed, 401)
    assert reply.status_code == 401
    assert waited < 1.2
    assert reply.json()["error"].startswith(f"API key {key_id(keys.doomed)} was revoked")
    assert "sensorlake keys create --scope read" in reply.json()["hint"]
    assert call(lake, "GET", "/api/v1/tables", keys.read).status_code == 200


def test_keys_never_appear_in_the_log_the_listing_or_the_registry(
    keyed: tuple[Sensorlake, Keys], device: str
) -> None:
    lake, keys = keyed
    for key in keys.all():  # successes and refusals of every kind, all logged at info
        for method, path in (("GET", "/api/v1/tables"), ("GET", "/metrics"),
                             ("POST", "/api/v1/nope")):
            call(lake, method, path, key)
        ingest(lake, f"farm/{device}/t", {"x": 1}, key)
        call(lake, "GET", "/api/v1/tables", key[:-1])
    assert "refused" in lake.log()
    listing = [lake.cli("keys", "list", "-f", fmt).stdout for fmt in ("table", "json", "csv")]
    assert key_id(keys.admin) in listing[1]
    stored = b"".join(path.read_bytes() for path in lake.data_dir.glob("registry.db*"))
    assert key_id(keys.admin).encode() in stored
    for key in keys.all():
        secret = key.rsplit("_", 1)[1]
        assert secret not in lake.log()
        for text in listing:
            assert secret not in text
        assert secret.encode() not in stored
    # Use is recorded (within a few seconds, in one write), still without the key.
    deadline = time.monotonic() + 10
    used: list[str | None] = []
    while time.monotonic() < deadline and not (used and all(used)):
        time.sleep(0.5)
        listed = orjson.loads(lake.cli("keys", "list", "-f", "json").stdout)
        used = [row[5] for row in listed["rows"] if row[0] in (key_id(keys.admin),
                                                                key_id(keys.ingest))]
    assert len(used) == 2
    assert all(used)


def test_simulate_over_http_with_an_ingest_key(keyed: tuple[Sensorlake, Keys]) -> None:
    lake, _ = keyed
    key = lake.cli("keys", "create", "--scope", "ingest").stdout.strip()
    done = lake.cli("simulate", "--via", "http", "--http-url", lake.url, "--profile", "edge-host",
                    "--devices", "2", "--count", "2", "--rate", "50", "--api-key", key)
    assert "sent 4 readings, acked 4, failed 0" in done.stdout
    refused = lake.cli("simulate", "--via", "http", "--http-url", lake.url, "--count", "1",
                       check=False)
    assert refused.returncode == 1
    assert "401" in refused.stderr
