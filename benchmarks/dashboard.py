"""The dashboard: a 7-day chart of 50 devices reading once a second, the overview's first paint,
and what the rollup tables cost the pipeline — in one run.

**Chart.** `--devices` greenhouse stations (default 50) send one reading a second for `--days`
(default 7) — 30 million readings of temperature, humidity and CO2, timestamped over the past
week — over HTTP (NDJSON batches of 1,000, 4 clients, each station's readings in order) into one
`sensorlake up` with default settings, which writes telemetry and the rollups as they arrive.
Once every reading is committed, the 7-day chart of temperature for all the devices is asked
`--repeat` times: the server's time (`elapsed_ms`, as the API reports it), the request's time
and the payload's bytes, with the source the API chose; the same for the 24-hour chart.

**First paint.** Headless Chromium (Debian's, /usr/bin/chromium) opens the overview: first
contentful paint, and the time until every device's card shows its values.

**Cost on ingest.** A stream of `--readings` readings of the same shape is filled once; then,
alternating over `--rounds`, a fresh `up` with rollups off, then on, starts on a copy of it with
an empty lake and its worker catches up. The figure is telemetry's pace between its first and
last full window (as in benchmarks/rules.py); each ratio against the baseline of its own round.

Usage: python benchmarks/dashboard.py [--devices 50] [--days 7] [--repeat 5]
       [--readings 2000000] [--rounds 2]
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
import time
from pathlib import Path

import httpx
import orjson

from local_servers import start_up
from rules import commits, copy, pace

SENSORLAKE = [sys.executable, "-m", "sensorlake.cli"]
BATCH = 1_000
CLIENTS = 4


def lines(station: int, start: float, first: int) -> bytes:
    """BATCH readings of one station, one a second from `start` + `first` seconds."""
    return b"\n".join(orjson.dumps({
        "device_id": f"gh-{station:02d}", "ts": start + first + i,
        "temperature": round(20 + 5 * ((first + i) % 86_400) / 86_400 + (i % 7) / 10, 2),
        "humidity": 55 + (first + i) % 11, "co2": 450 + (first + i) % 97})
        for i in range(BATCH))


def _post_station(base: str, station: int, start: float, seconds: int) -> None:
    with httpx.Client(timeout=300) as client:
        for first in range(0, seconds, BATCH):
            client.post(f"{base}/api/v1/ingest",
                        params={"topic": f"farm/gh-{station:02d}/telemetry"},
                        content=lines(station, start, first),
                        headers={"Content-Type": "application/x-ndjson"}).raise_for_status()


def fill(base: str, devices: int, seconds: int, start: float) -> float:
    """Every station's readings, one station per client at a time (so each stays in order)."""
    began = time.perf_counter()
    with multiprocessing.Pool(CLIENTS) as pool:
        pool.starmap(_post_station, [(base, s, start, seconds) for s in range(devices)])
    return time.perf_counter() - began


def committed_all(base: str, total: int) -> None:
    while True:
        text = httpx.get(f"{base}/metrics", timeout=30).text
        rows = sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith('sensorlake_rows_committed_total{output="telemetry"}'))
        if rows >= total:
            return
        time.sleep(1)


def charts(base: str, span: float, repeat: int) -> dict[str, object]:
    times, servers = [], []
    doc: dict[str, object] = {}
    size = 0
    for _ in range(repeat):
        now = time.time()
        started = time.perf_counter()
        reply = httpx.get(f"{base}/api/v1/chart", params={
            "field": "temperature", "from": now - span, "to": now}, timeout=120)
        reply.raise_for_status()
        times.append(time.perf_counter() - started)
        size = len(reply.content)
        doc = reply.json()
        servers.append(float(doc["elapsed_ms"]) / 1000)  # type: ignore[arg-type]
    series = doc["series"]
    assert isinstance(series, list)
    return {"source": doc["source"], "series": len(series), "points": doc["points"],
            "most_per_series": max(len(s["t"]) for s in series),
            "readings": sum(sum(s.get("count", [])) for s in series),
            "server_s": statistics.median(servers), "request_s": statistics.median(times),
            "worst_request_s": max(times), "bytes": size}


def first_paint(base: str, devices: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium")
        figures = []
        for _ in range(3):
            page = browser.new_page()
            started = time.perf_counter()
            page.goto(base + "/")
            page.wait_for_function(
                "n => document.querySelectorAll('[data-testid=device-card]').length >= n",
                arg=devices, timeout=60_000)
            cards = time.perf_counter() - started
            paint = page.evaluate(
                "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1")
            figures.append((paint / 1000, cards))
            page.close()
        browser.close()
    return {"first_contentful_paint_s": statistics.median(f[0] for f in figures),
            "all_cards_s": statistics.median(f[1] for f in figures)}


def cost(total: int, rounds: int, work: Path) -> list[dict[str, float]]:
    filled = work / "filled"
    base, proc = start_up(SENSORLAKE, filled, {"SENSORLAKE_LAKE__ROLLUPS": "false"})
    try:
        fill(base, 50, total // 50, time.time() - total // 50)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    results = []
    for _ in range(rounds):
        paces = {}
        for rollups in ("false", "true"):
            data = work / f"run-{rollups}"
            copy(filled, data)
            base, proc = start_up(SENSORLAKE, data, {"SENSORLAKE_LAKE__ROLLUPS": rollups})
            try:
                paces[rollups] = pace(commits(base, total))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(120)
            shutil.rmtree(data)
        results.append({"without": paces["false"], "with": paces["true"],
                        "ratio": paces["true"] / paces["false"]})
        print(f"  round: without {paces['false']:,.0f}/s, with {paces['true']:,.0f}/s, "
              f"{paces['true'] / paces['false']:.2f}x", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--readings", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    try:
        seconds = int(args.days * 86_400) // BATCH * BATCH
        total = seconds * args.devices
        data = work / "week"
        base, proc = start_up(SENSORLAKE, data, {})
        try:
            took = fill(base, args.devices, seconds, time.time() - seconds)
            print(f"posted {total:,} readings ({args.devices} devices x {seconds:,} s) in "
                  f"{took:.0f} s", flush=True)
            committed_all(base, total)
            time.sleep(3)  # the rollups' last checkpoint
            week = charts(base, args.days * 86_400, args.repeat)
            print(f"{args.days:g}-day chart: {json.dumps(week)}", flush=True)
            day = charts(base, 86_400, args.repeat)
            print(f"24-hour chart: {json.dumps(day)}", flush=True)
            paint = first_paint(base, args.devices)
            print(f"overview: {json.dumps(paint)}", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        print(f"cost on ingest ({args.readings:,} readings, rollups off/on):", flush=True)
        rounds = cost(args.readings, args.rounds, work)
        ratios = [r["ratio"] for r in rounds]
        print(f"rollups: {statistics.median(ratios):.2f}x of the pace without "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
