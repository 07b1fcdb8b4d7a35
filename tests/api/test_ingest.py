"""Readings in over real MQTT and real HTTP, out through SQL — on a running `sensorlake up`."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from tests.conftest import Sensorlake


@pytest.mark.parametrize("qos", [0, 1])
def test_mqtt_reading_is_queryable_within_a_second(lake: Sensorlake, device: str, qos: int) -> None:
    topic = f"farm/{device}/telemetry"
    sent = time.monotonic()
    lake.mqtt_publish(topic, [orjson.dumps({"temperature": 21.5, "humidity": 60})], qos=qos)
    rows = lake.wait_rows(
        f"SELECT device_id, topic, temperature, humidity FROM telemetry "
        f"WHERE device_id = '{device}'", 1, timeout=5)
    assert time.monotonic() - sent < 1.5
    assert rows == [[device, topic, 21.5, 60.0]]


def test_mqtt_json_array_from_a_gateway_becomes_many_readings(lake: Sensorlake, device: str
                                                              ) -> None:
    batch = [{"device_id": f"{device}-{i}", "co2": 400 + i, "ts": 1_779_000_000 + i}
             for i in range(5)]
    lake.mqtt_publish(f"gw/{device}/batch", [orjson.dumps(batch)])
    rows = lake.wait_rows(
        f"SELECT device_id, co2, epoch(ts) FROM telemetry WHERE device_id LIKE '{device}-%' "
        "ORDER BY device_id", 5)
    assert rows == [[f"{device}-{i}", 400.0 + i, 1_779_000_000.0 + i] for i in range(5)]


def test_http_object_array_and_ndjson(lake: Sensorlake, device: str) -> None:
    topic = f"farm/{device}/telemetry"
    assert lake.ingest(topic, {"temperature": 1}).json() == {"accepted": 1, "rejected": []}
    reply = lake.ingest(topic, [{"temperature": 2}, "nope", {"temperature": 3}])
    assert reply.status_code == 200
    assert reply.json() == {
        "accepted": 2, "rejected": [{"index": 1, "error": "expected a JSON object, got a string"}]
    }
    ndjson = b'{"temperature": 4}\n{"temperature": 5}\n{broken\n'
    reply = lake.ingest(topic, ndjson, "application/x-ndjson")
    assert reply.json()["accepted"] == 2
    assert reply.json()["rejected"][0]["index"] == 2
    rows = lake.wait_rows(
        f"SELECT temperature FROM telemetry WHERE device_id = '{device}' ORDER BY 1", 5)
    assert [r[0] for r in rows] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_http_batches_travel_in_few_stream_messages(lake: Sensorlake, device: str) -> None:
    readings = b"\n".join(orjson.dumps({"i": i}) for i in range(2000))
    assert lake.ingest(f"farm/{device}/t", readings, "application/x-ndjson").json()[
        "accepted"] == 2000
    rows = lake.wait_rows(
        f"SELECT count(*), count(DISTINCT seq) FROM telemetry WHERE device_id = '{device}' "
        "HAVING count(*) = 2000", 1)
    assert rows[0][0] == 2000
    assert rows[0][1] == 1  # 2000 small readings fit one stream message


def test_http_errors_are_specific_and_write_nothing(lake: Sensorlake, device: str) -> None:
    topic = f"farm/{device}/telemetry"
    too_big = b'{"x": "' + b"a" * (17 * 1024 * 1024) + b'"}'
    reply = lake.ingest(topic, too_big)
    assert reply.status_code == 413
    assert "limit" in reply.json()["error"]
    reply = httpx.post(f"{lake.url}/api/v1/ingest", params={"topic": topic},
                       content=b'{"x": 1}', headers={"Content-Type": "text/plain"})
    assert reply.status_code == 415
    assert "application/json" in reply.json()["hint"]
    reply = httpx.post(f"{lake.url}/api/v1/ingest", content=b"{}",
                       headers={"Content-Type": "application/json"})
    assert reply.status_code == 400
    assert "topic" in reply.json()["error"]
    assert lake.ingest("farm/+/x", {"x": 1}).status_code == 400
    reply = lake.ingest(topic, [1, 2])
    assert reply.status_code == 400
    assert reply.json()["accepted"] == 0
    time.sleep(0.3)
    assert lake.rows(f"SELECT count(*) FROM telemetry WHERE device_id = '{device}'") == [[0]]


def test_health_and_metrics(lake: Sensorlake, device: str) -> None:
    health = httpx.get(f"{lake.url}/healthz").json()
    assert health["status"] == "ok"
    assert health["stream"] == "connected"
    lake.ingest(f"farm/{device}/t", {"x": 1})
    text = httpx.get(f"{lake.url}/metrics").text
    for name in ("sensorlake_readings_ingested_total",
                 'sensorlake_rows_committed_total{output="telemetry"}',
                 'sensorlake_rows_committed_total{output="dead_letter"}',
                 'sensorlake_commit_failures_total{kind="transient"}',
                 'sensorlake_commit_failures_total{kind="terminal"}',
                 "sensorlake_rows_rejected_total", "sensorlake_session_restarts_total",
                 'sensorlake_worker_restarts_total', "sensorlake_consumer_lag_messages",
                 "sensorlake_flush_duration_seconds_bucket"):
        assert name in text
    ingested = next(line for line in text.splitlines()
                    if line.startswith("sensorlake_readings_ingested_total"))
    assert float(ingested.split()[-1]) >= 1


@pytest.mark.slow
def test_named_topic_roots_capture_only_them_without_bookkeeping(fresh: Sensorlake) -> None:
    fresh.extra_env["SENSORLAKE_STREAM__TOPICS"] = "farm/#"
    fresh.start()
    fresh.mqtt_publish("farm/gh-01/telemetry", [orjson.dumps({"n": n}) for n in range(5)])
    fresh.mqtt_publish("elsewhere/gh-01/telemetry", [orjson.dumps({"n": 99})])
    reply = fresh.ingest("elsewhere/gh-01/telemetry", {"n": 98})
    assert reply.status_code == 400
    assert "stream.topics" in reply.json()["error"]
    assert fresh.ingest("farm/gh-02/telemetry", {"n": 5}).status_code == 200
    rows = fresh.wait_rows("SELECT n, seq FROM telemetry ORDER BY n", 6)
    assert [r[0] for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    seqs = [r[1] for r in rows]
    assert seqs == list(range(seqs[0], seqs[0] + 6))  # one stream message per reading, no extras


def test_a_retried_batch_with_its_idempotency_key_is_stored_once(lake: Sensorlake, device: str
                                                                 ) -> None:
    headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": f"batch-{device}"}
    body = b'{"n": 1}\n{"n": 2}\n'
    for _ in range(3):
        reply = httpx.post(f"{lake.url}/api/v1/ingest", params={"topic": f"farm/{device}/t"},
                           content=body, headers=headers)
        assert reply.json() == {"accepted": 2, "rejected": []}
    time.sleep(0.5)
    assert lake.rows(f"SELECT count(*) FROM telemetry WHERE device_id = '{device}'") == [[2]]
    bad = httpx.post(f"{lake.url}/api/v1/ingest", params={"topic": f"farm/{device}/t"},
                     content=body, headers={**headers, "Idempotency-Key": "not ok!"})
    assert bad.status_code == 400
    assert "Idempotency-Key" in bad.json()["error"]
