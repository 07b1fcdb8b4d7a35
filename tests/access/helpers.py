"""HTTP calls with an API key, against a running `sensorlake up`."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.conftest import Sensorlake


def call(lake: Sensorlake, method: str, path: str, key: str | None = None,
         **kwargs: Any) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.request(method, f"{lake.url}{path}", headers=headers, timeout=30, **kwargs)


def ingest(lake: Sensorlake, topic: str, body: Any, key: str | None) -> httpx.Response:
    return call(lake, "POST", "/api/v1/ingest", key, params={"topic": topic}, json=body)


def query(lake: Sensorlake, sql: str, key: str | None) -> httpx.Response:
    return call(lake, "POST", "/api/v1/query", key, json={"sql": sql})


def wait_rows(lake: Sensorlake, sql: str, count: int, key: str, timeout: float = 10.0
              ) -> list[list[Any]]:
    deadline = time.monotonic() + timeout
    while True:
        reply = query(lake, sql, key)
        assert reply.status_code == 200, reply.text
        rows: list[list[Any]] = reply.json()["rows"]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def wait_status(lake: Sensorlake, method: str, path: str, key: str | None, status: int,
                timeout: float = 3.0, **kwargs: Any) -> tuple[httpx.Response, float]:
    """The first reply with `status`, and how long it took to come."""
    start = time.monotonic()
    while True:
        reply = call(lake, method, path, key, **kwargs)
        waited = time.monotonic() - start
        if reply.status_code == status or waited > timeout:
            return reply, waited
        time.sleep(0.05)
