"""Rule actions: how soon a reading's row is republished to an MQTT subscriber, or POSTed to a
webhook, after its publish — idle, and while the pipeline takes a load of other readings.

A fresh `sensorlake up` (default settings) with the 10 table rules of benchmarks/rules.py plus
two action rules on `bench/latency/telemetry`: one republishes each row to `echo/<device>`, one
POSTs it to a local HTTP receiver. A paho client publishes a sample reading at QoS 1 every
50 ms and times it until its row reaches a paho subscriber and the receiver. First idle, then
while HTTP clients push `--readings` nested readings (NDJSON batches of 1,000) at the same time:
at `--rate` readings/s, a load the pipeline keeps up with (with 0, as fast as 4 clients can, more
than the pipeline with 10 rules takes: the samples then wait in the stream's backlog).

Usage: python benchmarks/republish.py [--readings 150000] [--rate 5000] [--samples 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt

from local_servers import free_port, start_up
from rules import BATCH, STATIONS, body, push
from rules import config as table_rules

SENSORLAKE = [sys.executable, "-m", "sensorlake.cli"]


class Clock:
    """When each sample was sent, and when it arrived by each route."""

    def __init__(self) -> None:
        self.sent: dict[int, float] = {}
        self.arrived: dict[str, dict[int, float]] = {"republish": {}, "http": {}}

    def arrive(self, route: str, n: int) -> None:
        self.arrived[route].setdefault(n, time.perf_counter())

    def latencies(self, route: str, ns: range) -> list[float]:
        got = self.arrived[route]
        return sorted(got[n] - self.sent[n] for n in ns if n in got)


def receiver(clock: Clock) -> tuple[int, ThreadingHTTPServer]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            for row in json.loads(self.rfile.read(int(self.headers["Content-Length"]))):
                clock.arrive("http", int(row["n"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return port, server


def paced(base: str, total: int, rate: float) -> None:
    """`total` readings in batches of BATCH, at `rate` readings/s."""
    import httpx

    with httpx.Client(timeout=60) as http:
        started = time.perf_counter()
        for i in range(total // BATCH):
            station = i % STATIONS
            http.post(f"{base}/api/v1/ingest",
                      params={"topic": f"bench/st-{station:02d}/telemetry"},
                      content=body(station, i * BATCH),
                      headers={"Content-Type": "application/x-ndjson"}).raise_for_status()
            ahead = started + (i + 1) * BATCH / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)


def sample(publisher: mqtt.Client, clock: Clock, ns: range, pause: float = 0.05) -> None:
    for n in ns:
        clock.sent[n] = time.perf_counter()
        publisher.publish("bench/latency/telemetry", json.dumps({"device_id": "latency", "n": n}),
                          qos=1)
        time.sleep(pause)
    time.sleep(3.0)  # the last ones arrive


def figures(values: list[float], expected: int) -> str:
    if not values:
        return "none arrived"
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return (f"{statistics.median(values) * 1000:.0f} ms / {p99 * 1000:.0f} ms"
            f"{'' if len(values) == expected else f' ({len(values)} of {expected})'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=150_000)
    parser.add_argument("--rate", type=float, default=5_000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    clock = Clock()
    http_port, server = receiver(clock)
    mqtt_port = free_port()
    with tempfile.TemporaryDirectory(prefix="sensorlake-republish-") as tmp:
        path = Path(tmp) / "sensorlake.toml"
        path.write_text(table_rules(10) + f'''
[[rules]]
name = "echo"
sql = "SELECT device_id, n FROM 'bench/latency/telemetry'"
republish = "echo/${{topic(2)}}"

[[rules]]
name = "hook"
sql = "SELECT device_id, n FROM 'bench/latency/telemetry'"
http = "http://127.0.0.1:{http_port}/hook"
''')
        base, proc = start_up(SENSORLAKE, Path(tmp) / "data", {"SENSORLAKE_CONFIG": str(path)},
                              mqtt_port=mqtt_port)
        subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        subscriber.on_message = lambda _c, _u, msg: clock.arrive(
            "republish", int(json.loads(msg.payload)["n"]))
        subscriber.connect("127.0.0.1", mqtt_port)
        subscriber.subscribe("echo/#")
        subscriber.loop_start()
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        publisher.connect("127.0.0.1", mqtt_port)
        publisher.loop_start()
        time.sleep(1.0)
        try:
            idle = range(args.samples)
            sample(publisher, clock, idle)
            loaded = range(args.samples, 2 * args.samples)
            pushing = threading.Thread(target=lambda: paced(base, args.readings, args.rate)
                                       if args.rate else asyncio.run(push(base, args.readings)))
            started = time.perf_counter()
            pushing.start()
            time.sleep(1.0)  # the load is under way
            sample(publisher, clock, loaded, pause=0.1)
            pushing.join()
            load_s = time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            server.shutdown()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.samples} samples each; the load: {args.readings:,} readings over HTTP in "
          f"{load_s:.1f} s ({args.readings / load_s:,.0f}/s acked), 10 table rules")
    print("| publish → row delivered, p50 / p99 | idle | under load |")
    print("|---|---|---|")
    for route in ("republish", "http"):
        print(f"| {route} | {figures(clock.latencies(route, idle), len(idle))} | "
              f"{figures(clock.latencies(route, loaded), len(loaded))} |")


if __name__ == "__main__":
    main()
