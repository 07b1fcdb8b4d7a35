"""Backpressure: when input outruns the lake writer, memory must stay bounded.

HTTP clients push readings faster than the writer can commit them; the script samples the
resident memory of `sensorlake up` and of its lake writer every half second, along with the
stream backlog, and prints how both evolve. Bounded means: memory levels off while the
backlog (held by the stream, on disk) keeps growing.

Usage: python benchmarks/backpressure.py [--readings 6000000]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from pathlib import Path

import httpx

from ingest import Lake, _http_clients  # type: ignore[import-not-found]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def metric(text: str, name: str) -> float:
    line = next((x for x in text.splitlines() if x.startswith(name + " ")), None)
    return float(line.split()[-1]) if line else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=6_000_000)
    args = parser.parse_args()
    lake = Lake(flush_interval=5.0)
    up_pid = lake.proc.pid
    writer_pid = next(p for p in children(up_pid)
                      if b"worker" in Path(f"/proc/{p}/cmdline").read_bytes())
    samples: list[tuple[float, float, float, float, float]] = []
    done = threading.Event()

    def sample() -> None:
        started = time.perf_counter()
        while not done.is_set():
            text = httpx.get(f"{lake.url}/metrics", timeout=10).text
            samples.append((
                time.perf_counter() - started, rss_mib(up_pid), rss_mib(writer_pid),
                metric(text, "sensorlake_readings_ingested_total"),
                metric(text, 'sensorlake_rows_committed_total{output="telemetry"}'),
            ))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        asyncio.run(_http_clients(lake, args.readings, 20_000, 6))
        time.sleep(2)
    finally:
        done.set()
        sampler.join()
        lake.close()
    print(f"{'t (s)':>6} {'up RSS':>8} {'writer RSS':>11} {'ingested':>10} {'committed':>10} "
          f"{'backlog':>9}")
    for t, up_rss, writer_rss, ingested, committed in samples[:: max(1, len(samples) // 25)]:
        print(f"{t:6.1f} {up_rss:7.0f}M {writer_rss:10.0f}M {ingested:10,.0f} {committed:10,.0f} "
              f"{ingested - committed:9,.0f}")
    peak_backlog = max(s[3] - s[4] for s in samples)
    peak_up = max(s[1] for s in samples)
    peak_writer = max(s[2] for s in samples)
    print(f"peak backlog {peak_backlog:,.0f} readings; peak RSS: up {peak_up:.0f} MiB, "
          f"writer {peak_writer:.0f} MiB")


if __name__ == "__main__":
    main()
