"""Query threads against ingest: what a long query at `query.threads = 1` and `= 2` costs the
readings that arrive meanwhile, on this machine's cores.

A lake of 50 devices × 1 reading/s × 7 days (history.py's readings, compacted as maintenance
leaves them) is served by `sensorlake up`. HTTP clients push 2,000 readings/s (NDJSON batches of
100 every 50 ms) for `--seconds`, first with no query running, then while another client runs
"hourly average of each field per device over the last 7 days" back to back — far more querying
than a dashboard does. For each setting: the query's median time, and the ingest's
acknowledgement latency (POST → 200, the readings durable in the stream) p50 / p99 / max, idle
and under the query loop.

Usage: python benchmarks/query_threads.py [--days 7] [--devices 50] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from history import LAKE_HOURLY, SENSORLAKE, Fleet, load_lake
from local_servers import http, start_up

RATE = 2_000
BATCH = 100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ingest(base: str, seconds: float, latencies: list[float]) -> None:
    """RATE readings/s in batches, on a fixed schedule: a slow answer delays nothing after it."""
    url = f"{base}/api/v1/ingest?topic=farm/load/telemetry"
    interval = BATCH / RATE
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < seconds:
        body = "\n".join(json.dumps({"device_id": f"load-{i % 10}", "temperature": 21.5,
                                     "n": sent + i}) for i in range(BATCH)).encode()
        begun = time.perf_counter()
        http(url, body, headers={"Content-Type": "application/x-ndjson"})
        latencies.append(time.perf_counter() - begun)
        sent += BATCH
        delay = started + (sent // BATCH) * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def ask(base: str, sql: str) -> float:
    begun = time.perf_counter()
    http(f"{base}/api/v1/query", json.dumps({"sql": sql}).encode(),
         headers={"Content-Type": "application/json"})
    return time.perf_counter() - begun


def phase(base: str, seconds: float, querying: bool) -> tuple[list[float], list[float]]:
    latencies: list[float] = []
    queries: list[float] = []
    done = threading.Event()

    def query_loop() -> None:
        while not done.is_set():
            queries.append(ask(base, LAKE_HOURLY))

    loop = threading.Thread(target=query_loop)
    if querying:
        loop.start()
    try:
        ingest(base, seconds, latencies)
    finally:
        done.set()
        if querying:
            loop.join()
    return latencies, queries


def ms(value: float) -> str:
    return f"{value * 1000:,.0f} ms" if value >= 0.1 else f"{value * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    fleet = Fleet(args.devices, args.days, end=int(time.time()))
    print(f"# {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="sensorlake-threads-") as tmp:
        print(f"loading {fleet.readings:,} readings into the lake …", flush=True)
        lake = load_lake(fleet, Path(tmp) / "sensorlake")
        print(f"  loaded and compacted in {lake.seconds + lake.compacted_s:.0f} s")
        print(f"\ningest {RATE:,} readings/s over HTTP for {args.seconds:g} s per phase")
        print("| query.threads | hourly query p50 | ack p50 / p99 / max, no query | "
              "ack p50 / p99 / max, queries back to back |")
        print("|---|---|---|---|")
        for threads in (1, 2):
            base, proc = start_up(SENSORLAKE, lake.config.data_dir, {
                "SENSORLAKE_QUERY__THREADS": str(threads),
                "SENSORLAKE_LAKE__MAINTENANCE": "false"})
            try:
                ask(base, "SELECT count(*) FROM telemetry")  # the manifests, read once
                idle, _ = phase(base, args.seconds, querying=False)
                busy, queries = phase(base, args.seconds, querying=True)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)

            def acks(values: list[float]) -> str:
                return (f"{ms(statistics.median(values))} / {ms(percentile(values, 0.99))} / "
                        f"{ms(max(values))}")

            print(f"| {threads} | {ms(statistics.median(queries))} ({len(queries)} runs) | "
                  f"{acks(idle)} | {acks(busy)} |", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
