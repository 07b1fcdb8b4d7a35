"""Rules: what 0, 10 and 50 AWS IoT SQL rules cost the pipeline, on the same input, in one run.

For each rule count, a fresh `sensorlake up` (default settings; the rules in its config, each
writing a table of its own) takes `--readings` nested weather readings from 50 stations over
HTTP (NDJSON batches of 1,000, 4 clients at once). Throughput is readings/s from the first POST
until telemetry *and every rule table* hold all their rows (each rule table's count checked
against the same filter run over telemetry). The rules are a mix, a third each:

- projections with nested fields and `topic()`;
- WHERE filters on a nested field (each keeping a different share of the readings);
- functions over nested fields (`upper`, `round`, `cast`) with a filter.

Then, with the 10 rules, the latency from one reading's POST until its row is visible in a rule
table, p50 / p99: set by `lake.flush_interval` and `lake.rule_flush_interval` (the defaults here).

Usage: python benchmarks/rules.py [--readings 300000] [--counts 0,10,50] [--samples 10]
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
import time
from pathlib import Path

import httpx
import orjson

from local_servers import start_up

SENSORLAKE = [sys.executable, "-m", "sensorlake.cli"]
STATIONS = 50
BATCH = 1_000
CLIENTS = 4


def rule(k: int) -> tuple[str, str]:
    """(SQL, the same filter over telemetry) of the k-th rule."""
    kind = k % 3
    if kind == 0:
        return ("SELECT device_id, air.temperature AS t, air.humidity AS h, topic(2) AS site "
                "FROM 'bench/+/telemetry'", "true")
    threshold = -10 + (k * 7) % 40
    if kind == 1:
        return (f"SELECT device_id, air.temperature AS t FROM 'bench/+/telemetry' "
                f"WHERE air.temperature > {threshold}", f"air.temperature > {threshold}")
    return (f"SELECT upper(device_id) AS station, round(air.humidity) AS h, "
            f"cast(co2 AS INT) AS c FROM 'bench/#' WHERE co2 > {400 + threshold * 5}",
            f"co2 > {400 + threshold * 5}")


def config(count: int) -> str:
    lines = []
    for k in range(count):
        sql, _ = rule(k)
        lines += ["[[rules]]", f'name = "rule_{k}"', f"sql = {json.dumps(sql)}",
                  f'table = "rule_{k}"', ""]
    return "\n".join(lines)


def body(station: int, first: int) -> bytes:
    return b"\n".join(orjson.dumps({
        "device_id": f"st-{station:02d}", "n": first + i,
        "air": {"temperature": ((first + i) * 37 % 500) / 10 - 10,
                "humidity": 40 + ((first + i) * 11 % 500) / 10},
        "co2": 380 + (first + i) * 13 % 400}) for i in range(BATCH))


async def push(base: str, total: int) -> float:
    batches = asyncio.Queue[int]()
    for i in range(total // BATCH):
        batches.put_nowait(i)

    async def client(http: httpx.AsyncClient) -> None:
        while not batches.empty():
            i = batches.get_nowait()
            station = i % STATIONS
            reply = await http.post(
                f"{base}/api/v1/ingest", params={"topic": f"bench/st-{station:02d}/telemetry"},
                content=body(station, i * BATCH),
                headers={"Content-Type": "application/x-ndjson"}, timeout=120)
            reply.raise_for_status()

    started = time.perf_counter()
    async with httpx.AsyncClient() as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
    return time.perf_counter() - started


def query(base: str, sql: str) -> list[list[object]]:
    reply = httpx.post(f"{base}/api/v1/query", json={"sql": sql}, timeout=120)
    reply.raise_for_status()
    rows: list[list[object]] = reply.json()["rows"]
    return rows


def committed(base: str, output: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    prefix = f'sensorlake_rows_committed_total{{output="{output}"}}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def emitted(base: str, count: int) -> list[int]:
    """Rows each rule has stored, as the worker counts them (GET /api/v1/rules)."""
    listed = httpx.get(f"{base}/api/v1/rules", timeout=10).json()["rules"]
    by_name = {r["name"]: int(r["emitted"]) for r in listed}
    return [by_name.get(f"rule_{k}", 0) for k in range(count)]


def run(count: int, total: int, samples: int, work: Path) -> dict[str, float]:
    path = work / f"rules-{count}.toml"
    path.write_text(config(count))
    base, proc = start_up(SENSORLAKE, work / f"data-{count}",
                          {"SENSORLAKE_CONFIG": str(path)})
    try:
        started = time.perf_counter()
        acked = asyncio.run(push(base, total))
        while committed(base, "telemetry") < total:
            time.sleep(0.2)
        expected = [query(base, f"SELECT count(*) FROM telemetry WHERE {rule(k)[1]}")[0][0]
                    for k in range(count)]
        done = time.perf_counter()  # telemetry's part; the rules may be behind still
        while count and emitted(base, count) != expected:
            time.sleep(0.2)
        finished = time.perf_counter()
        got = [query(base, f"SELECT count(*) FROM rule_{k}")[0][0] for k in range(count)]
        assert got == expected, (got, expected)
        latencies = []
        if samples and count:
            for i in range(samples):
                sent = time.perf_counter()
                httpx.post(f"{base}/api/v1/ingest",
                           params={"topic": "bench/latency/telemetry"},
                           json={"device_id": "latency", "n": -1 - i,
                                 "air": {"temperature": 30.0, "humidity": 50.0}, "co2": 500},
                           timeout=30).raise_for_status()
                while not query(base, "SELECT count(*) FROM rule_0 WHERE device_id = 'latency' "
                                      f"HAVING count(*) > {i}"):
                    time.sleep(0.02)
                latencies.append(time.perf_counter() - sent)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    figures = {"acked_rate": total / acked, "telemetry_rate": total / (done - started),
               "rate": total / (finished - started)}
    if latencies:
        latencies.sort()
        figures["p50"] = statistics.median(latencies)
        figures["p99"] = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=300_000)
    parser.add_argument("--counts", default="0,10,50")
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.readings:,} readings over HTTP")
    print("| rules | acked by the stream | in telemetry | in telemetry and every rule table "
          "| vs 0 rules | rule table latency p50 / p99 |")
    print("|---|---|---|---|---|---|")
    base_rate = None
    with tempfile.TemporaryDirectory(prefix="sensorlake-rules-") as tmp:
        for count in counts:
            figures = run(count, args.readings, args.samples if count == 10 else 0, Path(tmp))
            base_rate = base_rate or figures["rate"]
            latency = (f"{figures['p50']:.2f} s / {figures['p99']:.2f} s" if "p50" in figures
                       else "")
            print(f"| {count} | {figures['acked_rate']:,.0f}/s | {figures['telemetry_rate']:,.0f}/s"
                  f" | **{figures['rate']:,.0f}/s** | {figures['rate'] / base_rate:.2f}× | "
                  f"{latency} |", flush=True)


if __name__ == "__main__":
    main()
