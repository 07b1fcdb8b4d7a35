"""Alerts: how soon a webhook hears of one anomalous reading while normal readings flow, and
what 20 detectors cost the pipeline — in one run.

**Throughput.** The stream is filled first, as `benchmarks/rules.py` fills it: `--readings`
smart-farm readings from 50 stations over HTTP, every field a detector reads. Then, alternating
over `--rounds` (0, 20, 0, 20…), a fresh `sensorlake up` (default settings) starts on a copy of
that stream with an empty lake, with no detector or with 20 of them, and its worker catches up.
The figure is telemetry's pace between its first and last full window (as in rules.py), each
ratio against the baseline of its own round. The 20 detectors are a mix over five fields:
6 range, 4 flag, 4 spike, 3 outlier, 2 stuck and 1 silence, all over every reading.

**Latency.** A fresh `up` with the same 20 detectors and a webhook channel (`group_wait = 0`)
pointing at a local HTTP server; a separate process posts normal readings at `--rate` per second
(NDJSON batches of 1,000). Every half second one anomalous reading of a new device is posted; the
figure is the time from its POST until the webhook receives the notification naming it.

Usage: python benchmarks/alerts.py [--readings 2000000] [--rounds 2] [--rate 20000]
       [--samples 60]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson

from local_servers import free_port, start_up
from rules import FLUSH_ROWS, commits, copy, pace

SENSORLAKE = [sys.executable, "-m", "sensorlake.cli"]
TOPIC = "bench/+/telemetry"


def detectors(channel: str | None = None) -> str:
    """20 detectors; none fires on the normal readings (the outliers' threshold is wide)."""
    send = f'channel = "{channel}"\n' if channel else ""
    entries = []
    kinds = ([("range", "air.temperature", "min = -40\nmax = 85")] * 2
             + [("range", "air.humidity", "min = 0\nmax = 100")] * 2
             + [("range", "co2", "min = 300\nmax = 5000")] * 2
             + [("flag", "error_code", "not_equal = 0")] * 2
             + [("flag", "co2", "equal = -1")] * 2
             + [("spike", "air.temperature", "rate = 1000")] * 2
             + [("spike", "co2", "rate = 100000")] * 2
             + [("outlier", "air.humidity", "window = 60\nthreshold = 50")] * 3
             + [("stuck", "co2", "count = 1000")] * 2
             + [("silence", "", "after = 3600")])
    for k, (kind, field, settings) in enumerate(kinds):
        entries.append(f'[[detectors]]\nname = "d{k:02d}-{kind}"\ntopic = "{TOPIC}"\n'
                       + (f'field = "{field}"\n' if field else "")
                       + f'kind = "{kind}"\n{settings}\n{send}')
    assert len(entries) == 20
    return "\n".join(entries)


BATCH = 1000
STATIONS = 50


def lines(station: int, first: int) -> bytes:
    """A batch of normal smart-farm readings (NDJSON), every field the detectors read."""
    return b"\n".join(orjson.dumps({
        "device_id": f"st-{station:02d}", "n": first + i, "error_code": 0,
        "air": {"temperature": 20 + (first + i) % 7, "humidity": 55 + (first + i) % 5},
        "co2": 500 + (first + i) % 11}) for i in range(BATCH))


def post(client: httpx.Client, base: str, n: int) -> None:
    station = (n // BATCH) % STATIONS
    client.post(f"{base}/api/v1/ingest", params={"topic": f"bench/st-{station:02d}/telemetry"},
                content=lines(station, n),
                headers={"Content-Type": "application/x-ndjson"}).raise_for_status()


def fill(total: int, work: Path) -> Path:
    """A data dir whose stream holds `total` readings (four posting processes)."""
    data = work / "filled"
    base, proc = start_up(SENSORLAKE, data, {})
    try:
        with multiprocessing.Pool(4) as pool:
            pool.starmap(_fill_part, [(base, part, total) for part in range(4)])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    return data


def _fill_part(base: str, part: int, total: int) -> None:
    with httpx.Client(timeout=120) as client:
        for n in range(part * BATCH, total, 4 * BATCH):
            post(client, base, n)


def throughput(count: int, total: int, filled: Path, data: Path) -> float:
    path = data.with_suffix(".toml")
    path.write_text(detectors() if count else "")
    copy(filled, data)
    base, proc = start_up(SENSORLAKE, data, {"SENSORLAKE_CONFIG": str(path)})
    try:
        steps = commits(base, total)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    shutil.rmtree(data)
    return pace(steps)


class Webhook:
    """Receives notifications; notes when each device was first named."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: dict[str, float] = {}
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.perf_counter()
                for alert in body.get("alerts", []):
                    hook.seen.setdefault(alert["device"], now)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


def load(base: str, rate: int, stop: multiprocessing.synchronize.Event,
         sent: multiprocessing.sharedctypes.Synchronized) -> None:  # type: ignore[type-arg]
    """Normal readings at `rate`/s in NDJSON batches of 1,000, paced by the clock."""
    n = 0
    started = time.perf_counter()
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            post(client, base, n)
            n += BATCH
            with sent.get_lock():
                sent.value = n
            ahead = n / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)


def latency(rate: int, samples: int, data: Path) -> tuple[list[float], float]:
    hook = Webhook()
    path = data.with_suffix(".toml")
    path.write_text(f'''
[alerts]
group_wait = 0
group_interval = 0

[[alerts.channels]]
name = "bench"
type = "webhook"
url = "http://127.0.0.1:{hook.port}/hook"

''' + detectors("bench"))
    base, proc = start_up(SENSORLAKE, data, {"SENSORLAKE_CONFIG": str(path)})
    stop = multiprocessing.Event()
    sent = multiprocessing.Value("q", 0)
    loader = multiprocessing.Process(target=load, args=(base, rate, stop, sent))
    try:
        loader.start()
        time.sleep(5)  # the load settles
        began, first = time.perf_counter(), sent.value
        posted: dict[str, float] = {}
        with httpx.Client(timeout=30) as client:
            for i in range(samples):
                device = f"hot-{i:03d}"
                posted[device] = time.perf_counter()
                client.post(f"{base}/api/v1/ingest", params={"topic": f"bench/{device}/telemetry"},
                            json={"device_id": device, "error_code": 1, "co2": 500,
                                  "air": {"temperature": 400, "humidity": 50}}
                            ).raise_for_status()
                time.sleep(0.5)
        deadline = time.perf_counter() + 30
        while len(hook.seen.keys() & posted.keys()) < samples and time.perf_counter() < deadline:
            time.sleep(0.05)
        offered = (sent.value - first) / (time.perf_counter() - began)
        stop.set()
        loader.join(60)
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        hook.server.shutdown()
    missing = posted.keys() - hook.seen.keys()
    if missing:
        raise SystemExit(f"{len(missing)} anomalies were never notified: {sorted(missing)[:5]}")
    return sorted(hook.seen[d] - posted[d] for d in posted), offered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()
    assert args.readings >= 3 * FLUSH_ROWS, "give at least 300,000 readings"
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="sensorlake-alerts-") as tmp:
        work = Path(tmp)
        times, offered = latency(args.rate, args.samples, work / "latency")
        p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
        print(f"## publish → webhook, one anomalous reading while {offered:,.0f} normal "
              f"readings/s were posted ({args.samples} samples)")
        print(f"p50 {statistics.median(times) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
              f"max {times[-1] * 1000:.0f} ms", flush=True)
        filled = fill(args.readings, work)
        print(f"## worker pace, {args.readings:,} readings in the stream, 0 vs 20 detectors")
        print("| round | detectors | pace (full windows) | vs 0 detectors |")
        print("|---|---|---|---|")
        ratios = []
        for round_ in range(1, args.rounds + 1):
            base = throughput(0, args.readings, filled, work / f"data-{round_}-0")
            print(f"| {round_} | 0 | {base:,.0f}/s | 1.00× |", flush=True)
            with_detectors = throughput(20, args.readings, filled, work / f"data-{round_}-20")
            ratios.append(with_detectors / base)
            print(f"| {round_} | 20 | {with_detectors:,.0f}/s | {ratios[-1]:.2f}× |", flush=True)
        print("# 20 detectors vs none, every round: " + " ".join(f"{r:.2f}×" for r in ratios))


if __name__ == "__main__":
    main()
