"""What the rollups must hold: what telemetry holds, bucket by bucket."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.conftest import Sensorlake


def chart(lake: Sensorlake, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{lake.url}/api/v1/chart", params=params, timeout=30)
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def check_rollups(lake: Sensorlake, field: str, since: float, timeout: float = 20.0) -> None:
    """The 1-minute and 1-hour rollups of `field` hold what telemetry holds, bucket by bucket
    (count, min, max, avg), closed buckets from the tables and open ones from the checkpoint,
    as the chart API reads them."""
    for source, size in (("1m", 60), ("1h", 3600)):
        sql = (f"SELECT device_id, epoch_us(ts) // {size * 1_000_000} * {size}, count({field}),"
               f" min({field}), max({field}), avg({field}) FROM telemetry WHERE {field} IS NOT "
               "NULL GROUP BY 1, 2 ORDER BY 1, 2")
        deadline = time.monotonic() + timeout
        while True:
            expected = [tuple(row) for row in lake.rows(sql)]
            doc = chart(lake, field=field, source=source, points=10_000,
                        **{"from": since, "to": time.time() + 60})
            got = [(s["device_id"], int(t), c, lo, hi, avg)
                   for s in doc["series"]
                   for t, c, lo, hi, avg in zip(s["t"], s["count"], s["min"], s["max"],
                                                s["avg"], strict=True)]
            if [g[:3] for g in got] == [(d, int(b), c) for d, b, c, *_ in expected] \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert [g[:5] for g in got] == [(d, int(b), c, lo, hi)
                                       for d, b, c, lo, hi, _ in expected], source
        assert all(abs(g[5] - e[5]) <= 1e-6 * max(1.0, abs(e[5]))
                   for g, e in zip(got, expected, strict=True)), source
