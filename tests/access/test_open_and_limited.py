"""On loopback the API is open until the first key is created, unlimited while open, and each
key is rate limited from then on."""

from __future__ import annotations

import time

from sensorlake.access.keys import KeyStore
from tests.access.helpers import call, ingest, wait_status
from tests.conftest import Sensorlake


def test_loopback_is_open_until_the_first_key_then_each_key_is_limited(
    fresh: Sensorlake, device: str
) -> None:
    fresh.extra_env.update(SENSORLAKE_API__RATE_LIMIT="1", SENSORLAKE_API__RATE_LIMIT_BURST="3")
    fresh.start()
    topic = f"farm/{device}/t"
    for n in range(10):  # open: no key, and no limit either
        assert ingest(fresh, topic, {"n": n}, None).status_code == 200
    assert call(fresh, "GET", "/api/v1/tables").status_code == 200
    assert call(fresh, "GET", "/metrics").status_code == 200
    assert not (fresh.data_dir / "registry.db").exists()  # `up` alone creates no registry

    key = fresh.cli("keys", "create", "--scope", "admin").stdout.strip()
    reply, _ = wait_status(fresh, "GET", "/api/v1/tables", None, 401)
    assert reply.status_code == 401

    for _ in range(3):  # the burst
        assert call(fresh, "GET", "/api/v1/tables", key).status_code == 200
    limited = call(fresh, "GET", "/api/v1/tables", key)
    assert limited.status_code == 429
    retry_after = int(limited.headers["retry-after"])
    assert retry_after >= 1
    assert "rate limit of 1 requests/s" in limited.json()["error"]
    assert "api.rate_limit" in limited.json()["hint"]
    time.sleep(retry_after)
    assert call(fresh, "GET", "/api/v1/tables", key).status_code == 200

    # Revoking the last key reopens the loopback API, as if none had been created.
    KeyStore(fresh.data_dir).revoke(key.split("_")[1])
    reply, _ = wait_status(fresh, "GET", "/api/v1/tables", None, 200)
    assert reply.status_code == 200
    assert key.rsplit("_", 1)[1] not in fresh.log()
