"""Ingest benchmark: sensorlake against a mosquitto + paho-subscriber baseline, in one run.

(a) MQTT QoS 1, one reading per message, several publisher connections: publish → committed in
    the lake (sensorlake) vs publish → appended to a JSON-lines file (baseline), readings/s.
    The publishers are Debian's mosquitto_pub (C) by default, so that the systems under test, not
    the load generator, use the two cores; `--publisher paho` uses Python publishers instead.
(b) HTTP NDJSON batches from concurrent clients: readings/s acknowledged by the stream, and
    readings/s until committed in the lake.
(c) publish → visible to a query latency, p50/p99, one QoS 1 reading at a time.

Usage: python benchmarks/ingest.py [--messages 400000] [--publishers 4] [--http-readings 2000000]
                                  [--publisher mosquitto_pub|paho]
Needs Debian's mosquitto (the baseline) and mosquitto-clients (the default publishers).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


# --- publishers (separate processes, so the client is not the bottleneck of one core) -----------


def _publisher(port: int, topic: str, start: int, count: int, ready: Any, go: Any) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    payloads = [
        orjson.dumps({"n": n, "temperature": 20 + (n % 100) / 10, "humidity": 55.0})
        for n in range(start, start + count)
    ]
    ready.release()
    go.wait()
    infos = [client.publish(topic, p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(timeout=120)
    client.disconnect()
    client.loop_stop()


def _payload_lines(start: int, count: int) -> bytes:
    return b"".join(
        orjson.dumps({"n": n, "temperature": 20 + (n % 100) / 10, "humidity": 55.0}) + b"\n"
        for n in range(start, start + count)
    )


def _start_paho(port: int, total: int, publishers: int) -> list[Any]:
    ctx = mp.get_context("fork")
    ready = ctx.Semaphore(0)
    go = ctx.Event()
    per = total // publishers
    procs = [
        ctx.Process(target=_publisher,
                    args=(port, f"farm/gh-{i:02d}/telemetry", i * per, per, ready, go))
        for i in range(publishers)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.acquire()
    go.set()
    return procs


def _payloads(total: int, publishers: int) -> list[bytes]:
    per = total // publishers
    return [_payload_lines(i * per, per) for i in range(publishers)]


def _start_mosquitto_pub(port: int, payloads: list[bytes]) -> list[Any]:
    """Debian's mosquitto_pub -l: one QoS 1 message per stdin line, written in C, so the
    publishers take a few percent of the CPU instead of most of it.

    Its stdin stays open until the sink has every reading: at end of input, mosquitto_pub 2.0
    disconnects without sending what it still has queued.
    """
    procs = []
    for i, data in enumerate(payloads):
        proc = subprocess.Popen(
            [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-M", "1000",
             "-t", f"farm/gh-{i:02d}/telemetry", "-l"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        )
        assert proc.stdin is not None
        threading.Thread(target=proc.stdin.write, args=(data,), daemon=True).start()
        procs.append(proc)
    return procs


MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
PUBLISHER = "mosquitto_pub"


def publish_parallel(port: int, total: int, publishers: int) -> float:
    """Start `publishers` publishers together; returns the start time."""
    if PUBLISHER == "paho":
        procs = _start_paho(port, total, publishers)
        started = time.perf_counter()
    else:
        payloads = _payloads(total, publishers)
        started = time.perf_counter()
        procs = _start_mosquitto_pub(port, payloads)
    publish_parallel.procs = procs  # type: ignore[attr-defined]
    return started


def join_publishers() -> None:
    """After the sink has every reading."""
    for proc in publish_parallel.procs:  # type: ignore[attr-defined]
        if isinstance(proc, subprocess.Popen):
            assert proc.stdin is not None
            proc.stdin.close()
            if proc.wait(60) != 0:
                raise RuntimeError(f"mosquitto_pub exited with {proc.returncode}")
        else:
            proc.join(300)


# --- baseline: mosquitto + a paho subscriber appending each message to a JSON-lines file ---------


def _subscriber(port: int, out: str, total: int, ready: Any, done: Any) -> None:
    count = 0
    with open(out, "ab") as fh:

        def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            nonlocal count
            fh.write(orjson.dumps({"topic": msg.topic, "payload": orjson.loads(msg.payload),
                                   "received_at": time.time()}) + b"\n")
            count += 1
            if count >= total:
                fh.flush()
                done.set()

        def on_subscribe(*_: Any) -> None:
            ready.release()

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="baseline-sub")
        client.on_message = on_message
        client.on_subscribe = on_subscribe
        client.max_inflight_messages_set(1000)
        client.connect("127.0.0.1", port)
        client.subscribe("farm/#", qos=1)
        client.loop_forever()


def baseline(total: int, publishers: int) -> dict[str, float] | None:
    broker = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(broker).exists():
        print("baseline skipped: mosquitto not installed (apt-get install mosquitto)")
        return None
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bench-mosq-"))
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_inflight_messages 1000\nmax_queued_messages 10000000\n"
    )
    broker_proc = subprocess.Popen([broker, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        ctx = mp.get_context("fork")
        ready, done = ctx.Semaphore(0), ctx.Event()
        sub = ctx.Process(target=_subscriber,
                          args=(port, str(tmp / "out.jsonl"), total, ready, done))
        sub.start()
        ready.acquire()
        started = publish_parallel(port, total, publishers)
        done.wait(600)
        elapsed = time.perf_counter() - started
        join_publishers()
        sub.kill()
        lines = sum(1 for _ in (tmp / "out.jsonl").open("rb"))
        return {"readings": lines, "seconds": elapsed, "rate": lines / elapsed}
    finally:
        broker_proc.send_signal(signal.SIGTERM)
        broker_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


# --- sensorlake ----------------------------------------------------------------------------------


class Lake:
    def __init__(self, flush_interval: float, topics: str = "#") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-lake-"))
        self.http, self.mqtt, self.nats = free_port(), free_port(), free_port()
        env = dict(os.environ, SENSORLAKE_STREAM__PORT=str(self.nats),
                   SENSORLAKE_LAKE__FLUSH_INTERVAL=str(flush_interval),
                   SENSORLAKE_STREAM__TOPICS=topics)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sensorlake.cli", "up", "--data-dir", str(self.dir / "data"),
             "--http-port", str(self.http), "--mqtt-port", str(self.mqtt)],
            env=env, stdout=subprocess.DEVNULL, stderr=(self.dir / "up.log").open("wb"),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("sensorlake did not start:\n" + (self.dir / "up.log").read_text())

    baseline_committed = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def query(self, sql: str) -> dict[str, Any]:
        reply = httpx.post(f"{self.url}/api/v1/query", json={"sql": sql}, timeout=60)
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    def committed(self) -> float:
        """Readings committed so far, from /metrics (cheap to poll, unlike a query)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        line = next(x for x in text.splitlines()
                    if x.startswith('sensorlake_rows_committed_total{output="telemetry"}'))
        return float(line.split()[-1])

    def wait_committed(self, sql_count: str, total: int, timeout: float = 600) -> None:
        """Wait for `total` more readings to be committed, then check them with SQL."""
        target = self.baseline_committed + total
        deadline = time.monotonic() + timeout
        while self.committed() < target:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not committed in time: {self.committed()} < {target}")
            time.sleep(0.02)
        self.baseline_committed = target
        count = self.query(sql_count)["rows"][0][0]
        if count != total:
            raise RuntimeError(f"{sql_count} → {count}, expected {total}")

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def bench_mqtt(lake: Lake, total: int, publishers: int) -> dict[str, float]:
    started = publish_parallel(lake.mqtt, total, publishers)
    lake.wait_committed("SELECT count(*) FROM telemetry WHERE topic LIKE 'farm/%'", total)
    elapsed = time.perf_counter() - started
    join_publishers()
    return {"readings": total, "seconds": elapsed, "rate": total / elapsed}


async def _http_clients(lake: Lake, total: int, batch: int, clients: int) -> float:
    body = b"\n".join(
        orjson.dumps({"device_id": f"gw-{i % 50}", "temperature": 20.5, "humidity": 60.0,
                      "co2": 410.0}) for i in range(batch)
    )
    batches = total // batch
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(batches):
        queue.put_nowait(i)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            queue.get_nowait()
            reply = await client.post(
                f"{lake.url}/api/v1/ingest", params={"topic": "http/gw/batch"}, content=body,
                headers={"Content-Type": "application/x-ndjson"}, timeout=120)
            reply.raise_for_status()
            assert reply.json()["accepted"] == batch

    async with httpx.AsyncClient() as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return time.perf_counter() - started


def bench_http(lake: Lake, total: int, batch: int, clients: int) -> dict[str, float]:
    started = time.perf_counter()
    acked = asyncio.run(_http_clients(lake, total, batch, clients))
    lake.wait_committed("SELECT count(*) FROM telemetry WHERE topic = 'http/gw/batch'", total)
    committed = time.perf_counter() - started
    return {"readings": total, "acked_seconds": acked, "rate": total / acked,
            "committed_rate": total / committed}


def bench_latency(lake: Lake, samples: int) -> dict[str, float]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-latency")
    client.connect("127.0.0.1", lake.mqtt)
    client.loop_start()
    latencies: list[float] = []
    with httpx.Client() as http:
        for i in range(samples):
            marker = f"lat-{i}-{uuid.uuid4().hex[:6]}"
            sent = time.perf_counter()
            client.publish("latency/probe-1/telemetry",
                           orjson.dumps({"marker": marker, "v": i}), qos=1).wait_for_publish()
            sql = f"SELECT count(*) FROM telemetry WHERE marker = '{marker}'"
            while True:
                reply = http.post(f"{lake.url}/api/v1/query", json={"sql": sql}, timeout=30)
                if reply.status_code == 200 and reply.json()["rows"][0][0] == 1:
                    break
                if time.perf_counter() - sent > 10:
                    raise RuntimeError(f"{marker} not visible after 10 s")
            latencies.append((time.perf_counter() - sent) * 1000)
    client.disconnect()
    client.loop_stop()
    latencies.sort()
    return {
        "samples": samples,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max_ms": latencies[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=400_000, help="MQTT readings in (a)")
    parser.add_argument("--publishers", type=int, default=4, help="MQTT publisher processes")
    parser.add_argument("--http-readings", type=int, default=2_000_000, help="readings in (b)")
    parser.add_argument("--http-batch", type=int, default=10_000, help="readings per request")
    parser.add_argument("--http-clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--flush-interval", type=float, default=1.0)
    parser.add_argument("--publisher", choices=("mosquitto_pub", "paho"), default="mosquitto_pub",
                        help="MQTT publishers in (a): Debian's mosquitto_pub -l (C) or paho "
                        "(Python, which takes most of the two cores itself)")
    args = parser.parse_args()
    global PUBLISHER
    PUBLISHER = args.publisher

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {platform.platform()}")
    print(f"(a) MQTT QoS 1, {args.messages} readings, {args.publishers} {args.publisher} "
          "publishers")
    base = baseline(args.messages, args.publishers)
    if base:
        print(f"    baseline mosquitto + paho → JSON lines: {base['rate']:>10,.0f} readings/s "
              f"({base['seconds']:.2f} s)")
    for topics in ("#", "farm/#"):
        lake = Lake(args.flush_interval, topics)
        try:
            mq = bench_mqtt(lake, args.messages, args.publishers)
        finally:
            lake.close()
        print(f"    sensorlake, stream.topics = [\"{topics}\"], publish → committed: "
              f"{mq['rate']:>8,.0f} readings/s ({mq['seconds']:.2f} s)")
        if base:
            print(f"      ratio to baseline: {mq['rate'] / base['rate']:.2f}x")
    lake = Lake(args.flush_interval)
    try:
        print(f"(b) HTTP NDJSON, {args.http_readings} readings in batches of {args.http_batch}, "
              f"{args.http_clients} clients")
        hb = bench_http(lake, args.http_readings, args.http_batch, args.http_clients)
        print(f"    acknowledged by the stream: {hb['rate']:>10,.0f} readings/s "
              f"({hb['acked_seconds']:.2f} s)")
        print(f"    until committed in the lake: {hb['committed_rate']:>10,.0f} readings/s")
        print(f"(c) publish → visible to query, {args.latency_samples} samples")
        lat = bench_latency(lake, args.latency_samples)
        print(f"    p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, "
              f"max {lat['max_ms']:.1f} ms")
    finally:
        lake.close()


if __name__ == "__main__":
    main()
