"""CLI start-up: how long a user waits for `sensorlake --help` and for `sensorlake query`.

Runs the installed `sensorlake` command as a user would (a new process each time) and reports
the median wall time of --runs runs:

- `sensorlake --help`;
- `sensorlake query "SELECT 1"` and a small aggregate over `telemetry`, while `up` runs on the
  data folder (the command asks it over HTTP);
- the same aggregate with `up` stopped: the command then loads the engine itself. This is the
  baseline of the same run.

Usage: python benchmarks/cli_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from local_servers import http, start_up

AGGREGATE = ("SELECT device_id, avg(temperature), count(*) FROM telemetry "
             "WHERE ts > now() - INTERVAL 10 MINUTE GROUP BY device_id")


def command() -> list[str]:
    found = shutil.which("sensorlake", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "sensorlake.cli"]


def median_wall(args: list[str], runs: int, cwd: Path) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def ingest(url: str, count: int) -> None:
    body = json.dumps([{"device_id": f"gh-{i % 10:02d}", "temperature": 20 + i % 7}
                       for i in range(count)]).encode()
    http(f"{url}/api/v1/ingest?topic=farm/bench/telemetry", body, timeout=30,
         headers={"Content-Type": "application/json"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    cli = command()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; median of {args.runs} runs")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = ["--data-dir", str(work / "data")]
        help_s = median_wall([*cli, "--help"], args.runs, work)
        env = {"SENSORLAKE_LAKE__FLUSH_INTERVAL": "1"}
        url, proc = start_up(cli, work / "data", env, cwd=work)
        try:
            ingest(url, 2_000)
            time.sleep(3)  # committed, so both paths read the same lake
            select_1 = median_wall([*cli, "query", "SELECT 1", *data], args.runs, work)
            served = median_wall([*cli, "query", AGGREGATE, *data], args.runs, work)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        alone = median_wall([*cli, "query", AGGREGATE, *data], args.runs, work)
    for label, seconds in (
        ("sensorlake --help", help_s),
        ('sensorlake query "SELECT 1"              (up running)', select_1),
        ("sensorlake query <10-minute aggregate>   (up running)", served),
        ("sensorlake query <10-minute aggregate>   (no up: the baseline)", alone),
    ):
        print(f"{label:<64} {seconds * 1000:7.0f} ms")

if __name__ == "__main__":
    main()
