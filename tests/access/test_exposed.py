"""On an address other than loopback a key is always needed, even before any was created.

In-process (the app without a socket), so the test binds nothing to a real network interface.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from sensorlake.access.keys import KeyStore, Scope
from sensorlake.api.app import ApiContext, create_app
from sensorlake.config import load_config
from sensorlake.hosts import is_loopback
from sensorlake.query.engine import QueryEngine
from sensorlake.stream.connection import StreamClient


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("::1", True), ("localhost", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("sensors.example", False),
])
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_non_loopback_api_needs_a_key_even_when_none_exists(tmp_path: Path) -> None:
    config = load_config(None, {"data_dir": tmp_path / "data", "server": {"host": "0.0.0.0"}},
                         environ={})
    ctx = ApiContext(config=config, client=StreamClient(config), engine=QueryEngine(config))
    transport = httpx.ASGITransport(app=create_app(ctx))

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://sensorlake") as client:
            reply = await client.get("/api/v1/tables")
            assert reply.status_code == 401
            assert reply.json() == {
                "error": "the HTTP API on 0.0.0.0 needs an API key and none has been created",
                "hint": "create one on the server with `sensorlake keys create --scope read` "
                "and send it as `Authorization: Bearer <key>`",
            }
            assert (await client.post("/api/v1/ingest?topic=a/b")).status_code == 401
            assert (await client.get("/metrics")).status_code == 401
            _, key = KeyStore(config.data_dir).create(Scope.read)
            await asyncio.sleep(0.6)  # the app re-reads the registry at most every half second
            reply = await client.get("/api/v1/tables/nosuch",
                                     headers={"Authorization": f"Bearer {key}"})
            assert reply.status_code == 404  # past the guard: the table does not exist
            assert "sensorlake tables" in reply.json()["hint"]

    asyncio.run(scenario())
