"""Rules: what 0, 10 and 50 AWS IoT SQL rules cost the pipeline, on the same input, in one run.

The stream is filled first: one `sensorlake up` takes `--readings` nested weather readings from
50 stations over HTTP (NDJSON batches of 1,000, 4 clients at once) and is stopped. Then, for each
rule count, a fresh `sensorlake up` (default settings; the rules in its config, each writing a
table of its own) starts on a copy of that stream with an empty lake, and its worker catches up.
That is the pipeline's capacity, measured alone: HTTP ingest acks several times faster than any
worker here, and rules cost the worker, not ingest. Figures per rule count:

- **pace**: telemetry's rows/s between its first and its last full window (`lake.flush_rows`)
  as /metrics counts them — no start-up, and not the last window's wait for
  `lake.flush_interval` (up to 10 s), which alone moved whole-run rates of short runs by 2×;
- **whole run**: readings/s from `up` healthy until telemetry *and every rule table* hold all
  their rows (each rule table's count checked against the same filter run over telemetry).

The counts run `--rounds` times, alternated (0, 10, 50, 0, 10, 50, …); each ratio is against the
baseline of its own round, as this machine's speed drifts between minutes. The rules are a mix,
a third each:

- projections with nested fields and `topic()`;
- WHERE filters on a nested field (each keeping a different share of the readings);
- functions over nested fields (`upper`, `round`, `cast`) with a filter.

Then, with the 10 rules, the latency from one reading's POST until its row is visible in a rule
table, p50 / p99: set by `lake.flush_interval` and `lake.rule_flush_interval` (the defaults here).

Usage: python benchmarks/rules.py [--readings 3000000] [--counts 0,10,50] [--rounds 2]
       [--samples 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
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


FLUSH_ROWS = 100_000  # lake.flush_rows, the default: a window is cut at this many readings
LAKE_FILES = ("warehouse", "catalog.db", "device_state.db", "run.json", "nats.pid")


def fill(total: int, work: Path) -> Path:
    """A data dir whose stream holds `total` readings (its lake is dropped by `copy`)."""
    data = work / "filled"
    base, proc = start_up(SENSORLAKE, data, {})
    try:
        asyncio.run(push(base, total))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    return data


def copy(filled: Path, target: Path) -> None:
    """The stream, keys and certificates of `filled`, with no lake: the worker starts at seq 1."""
    shutil.copytree(filled, target, ignore=lambda folder, names: [
        n for n in names if folder == str(filled) and n.startswith(LAKE_FILES)])


def samples_latency(base: str, samples: int) -> list[float]:
    latencies = []
    for i in range(samples):
        sent = time.perf_counter()
        httpx.post(f"{base}/api/v1/ingest", params={"topic": "bench/latency/telemetry"},
                   json={"device_id": "latency", "n": -1 - i,
                         "air": {"temperature": 30.0, "humidity": 50.0}, "co2": 500},
                   timeout=30).raise_for_status()
        while not query(base, "SELECT count(*) FROM rule_0 WHERE device_id = 'latency' "
                              f"HAVING count(*) > {i}"):
            time.sleep(0.02)
        latencies.append(time.perf_counter() - sent)
    return sorted(latencies)


def commits(base: str, total: int) -> list[tuple[float, float]]:
    """(time, telemetry rows committed) at each commit, until `total` rows are."""
    steps: list[tuple[float, float]] = []
    while not steps or steps[-1][1] < total:
        rows = committed(base, "telemetry")
        if rows != (steps[-1][1] if steps else 0):
            steps.append((time.perf_counter(), rows))
        time.sleep(0.05)
    return steps


def pace(steps: list[tuple[float, float]]) -> float:
    """Rows/s between the first and the last commit of a full window of telemetry."""
    full = [(t, rows) for (_, before), (t, rows) in itertools.pairwise([(0.0, 0.0), *steps])
            if rows - before >= FLUSH_ROWS]
    if len(full) < 2:
        raise SystemExit(f"only {len(full)} full windows: give more --readings")
    (t0, rows0), (t1, rows1) = full[0], full[-1]
    return (rows1 - rows0) / (t1 - t0)


def run(count: int, total: int, samples: int, filled: Path, data: Path) -> dict[str, float]:
    path = data.with_suffix(".toml")
    path.write_text(config(count))
    copy(filled, data)
    base, proc = start_up(SENSORLAKE, data, {"SENSORLAKE_CONFIG": str(path)})
    try:
        started = time.perf_counter()
        steps = commits(base, total)
        expected = [query(base, f"SELECT count(*) FROM telemetry WHERE {rule(k)[1]}")[0][0]
                    for k in range(count)]
        while count and emitted(base, count) != expected:
            time.sleep(0.1)
        finished = time.perf_counter()
        got = [query(base, f"SELECT count(*) FROM rule_{k}")[0][0] for k in range(count)]
        assert got == expected, (got, expected)
        latencies = samples_latency(base, samples) if samples and count else []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    shutil.rmtree(data)
    figures = {"pace": pace(steps), "rate": total / (finished - started)}
    if latencies:
        figures["p50"] = statistics.median(latencies)
        figures["p99"] = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=3_000_000)
    parser.add_argument("--counts", default="0,10,50")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.readings:,} readings in the stream before the worker starts")
    with tempfile.TemporaryDirectory(prefix="sensorlake-rules-") as tmp:
        started = time.perf_counter()
        filled = fill(args.readings, Path(tmp))
        print(f"# filled over HTTP at {args.readings / (time.perf_counter() - started):,.0f}/s "
              "(start-up and stop included)", flush=True)
        print("| round | rules | pace (full windows) | vs 0 rules | whole run, every table "
              "| vs 0 rules | rule table latency p50 / p99 |")
        print("|---|---|---|---|---|---|---|")
        ratios: dict[int, list[float]] = {c: [] for c in counts}
        for round_ in range(1, args.rounds + 1):
            base: dict[str, float] = {}
            for count in counts:
                figures = run(count, args.readings, args.samples if count == 10 else 0, filled,
                              Path(tmp) / f"data-{round_}-{count}")
                base = base or figures
                ratios[count].append(figures["pace"] / base["pace"])
                latency = (f"{figures['p50']:.2f} s / {figures['p99']:.2f} s"
                           if "p50" in figures else "")
                print(f"| {round_} | {count} | **{figures['pace']:,.0f}/s** | "
                      f"{figures['pace'] / base['pace']:.2f}× | {figures['rate']:,.0f}/s | "
                      f"{figures['rate'] / base['rate']:.2f}× | {latency} |", flush=True)
        print("# pace vs 0 rules, every round: " + "; ".join(
            f"{c} rules " + " ".join(f"{r:.2f}×" for r in ratios[c]) for c in counts))


if __name__ == "__main__":
    main()
