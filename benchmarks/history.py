"""History: a week of a farm's readings, queried in sensorlake, InfluxDB 1.6 and VictoriaMetrics.

50 devices × 1 reading/s × 7 days (30 million readings, each with `temperature`, `humidity` and
`co2`) are generated once, deterministically, with the resolution real sensors report (0.1 °C,
0.1 %RH, 1 ppm): a daily cycle, a slower drift per device, and noise. The same readings go

- into sensorlake's `telemetry` table, appended an hour at a time in arrival order (all devices
  interleaved, as the writer commits them, with `topic`, `received_at`, `seq` and `stream` filled
  as the pipeline fills them), and then compacted by `sensorlake maintain`'s code;
- into InfluxDB 1.6 (measurement `telemetry`, tag `device_id`, three fields) over /write;
- into VictoriaMetrics (the same line protocol over its /write: three series per device).

Then each system answers, five times, the median reported:

- "hourly average of each field per device over the last 7 days" (8,400 rows of 3 averages);
- "last 24 h of one device" (86,400 readings of 3 fields, every one returned).

Each answers over its HTTP API (sensorlake: `sensorlake up` on the loaded data folder,
`POST /api/v1/query`; one device's day with `"shape": "columns"`, as a chart asks for it, and
also as rows), the response read and parsed by the client. VictoriaMetrics' result
cache is turned off per request (`nocache=1`), since neither of the others caches results. Only
one system runs at a time.

Bytes per value: the files on disk divided by readings × 3 — for sensorlake the warehouse (data
and metadata) once maintenance has expired the replaced snapshots and removed their files, as it
does within `lake.orphan_grace`; for the others their data folders, after they have flushed.

InfluxDB and VictoriaMetrics come from Debian (`apt-get install influxdb victoria-metrics`);
a missing one is skipped with a note.

Usage: python benchmarks/history.py [--days 7] [--devices 50] [--only sensorlake,influxdb,vm]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.types import DoubleType

from local_servers import free_port, http, start_up, wait_for
from sensorlake.config import Config
from sensorlake.lake.catalog import open_catalog
from sensorlake.lake.maintenance import Maintenance, TableReport
from sensorlake.lake.tables import (
    TELEMETRY,
    Totals,
    ensure_tables,
    load_table,
    table_totals,
)
from sensorlake.query.engine import QueryEngine

SENSORLAKE = [sys.executable, "-m", "sensorlake.cli"]
HOUR = 3600
DAY = 24 * HOUR
FIELDS = ("temperature", "humidity", "co2")
SAMPLES = 5
APPEND_S = HOUR // 2
"""Seconds of readings per lake commit: enough commits that today's partition passes
lake.compact_min_files and is compacted too, as it is within minutes at the 10 s default."""

LAKE_HOURLY = """
SELECT device_id, make_timestamptz(epoch_us(ts) // 3_600_000_000 * 3_600_000_000) AS hour,
       avg(temperature) AS temperature, avg(humidity) AS humidity, avg(co2) AS co2
FROM telemetry WHERE ts > now() - INTERVAL 7 DAY
GROUP BY ALL
"""
LAKE_HOURLY_ROUNDED = """
SELECT device_id, to_timestamp(epoch(ts)::BIGINT // 3600 * 3600) AS hour,
       avg(temperature) AS temperature, avg(humidity) AS humidity, avg(co2) AS co2
FROM telemetry WHERE ts > now() - INTERVAL 7 DAY
GROUP BY ALL
"""
"""The form docs/operations.md gave before: slower, and `::BIGINT` rounds, so a reading in the
last half second of an hour lands in the next."""
LAKE_HOURLY_TRUNC = """
SELECT device_id, date_trunc('hour', ts) AS hour,
       avg(temperature) AS temperature, avg(humidity) AS humidity, avg(co2) AS co2
FROM telemetry WHERE ts > now() - INTERVAL 7 DAY
GROUP BY ALL
"""
LAKE_DAY = """
SELECT ts, temperature, humidity, co2 FROM telemetry
WHERE device_id = '{device}' AND ts > now() - INTERVAL 1 DAY ORDER BY ts
"""
INFLUX_HOURLY = ("SELECT mean(temperature), mean(humidity), mean(co2) FROM telemetry "
                 "WHERE time > now() - 7d GROUP BY time(1h), device_id")
INFLUX_DAY = ("SELECT temperature, humidity, co2 FROM telemetry "
              "WHERE device_id = '{device}' AND time > now() - 24h")


@dataclass(frozen=True)
class Fleet:
    devices: int
    days: int
    end: int
    """Epoch second of the last reading: the readings end now, so "the last 7 days" is all."""

    @property
    def start(self) -> int:
        return self.end - self.days * DAY + 1

    @property
    def readings(self) -> int:
        return self.devices * self.days * DAY

    @property
    def one_device(self) -> str:
        return self.names()[min(6, self.devices - 1)]

    def names(self) -> list[str]:
        return [f"gh-{i:02d}" for i in range(1, self.devices + 1)]

    def hours(self, step: int = HOUR) -> Iterator[pa.Table]:
        """`step` seconds of readings at a time, time-major (every device each second)."""
        for first in range(self.start, self.end + 1, step):
            yield self.hour(first, min(first + step, self.end + 1))

    def hour(self, first: int, stop: int) -> pa.Table:
        n, d = stop - first, self.devices
        index = pa.array(range(n * d), pa.int64())
        t = pc.add(pc.divide(index, d), first)  # integer division: the second
        dev = pc.subtract(index, pc.multiply(pc.divide(index, d), d))
        devf = dev.cast(pa.float64())

        def noise(scale: float, salt: int) -> pa.Array:
            """About normal: the sum of three uniforms, centred."""
            parts = [pc.random(n * d, initializer=first * 8 + salt * 3 + k) for k in range(3)]
            return pc.multiply(pc.subtract(pc.add(pc.add(parts[0], parts[1]), parts[2]), 1.5),
                               scale * 2)

        day_phase = pc.divide(pc.subtract(pc.subtract(t, pc.multiply(pc.divide(t, DAY), DAY)),
                                          6 * HOUR).cast(pa.float64()), DAY / (2 * math.pi))
        daily = pc.sin(day_phase)
        period = pc.add(pc.multiply(devf, 600.0), 5.0 * HOUR)
        drift = pc.sin(pc.add(pc.divide(pc.multiply(t.cast(pa.float64()), 2 * math.pi), period),
                              devf))
        base = pc.add(pc.subtract(devf, pc.multiply(pc.divide(dev, 7), 7).cast(pa.float64())),
                      18.0)
        temperature = pc.round(pc.add(pc.add(pc.add(base, pc.multiply(daily, 6.0)),
                                             pc.multiply(drift, 0.8)), noise(0.04, 1)), 1)
        humidity = pc.round(pc.add(pc.subtract(pc.subtract(65.0, pc.multiply(daily, 12.0)),
                                               pc.multiply(drift, 2.0)), noise(0.08, 2)), 1)
        co2 = pc.round(pc.add(pc.add(pc.add(450.0, pc.multiply(pc.max_element_wise(daily, 0.0),
                                                                 250.0)),
                                     pc.multiply(drift, 30.0)), noise(1.5, 3)))
        device = pa.array(self.names()).take(dev)
        ts_us = pc.multiply(t, 1_000_000)
        latency = pc.add(pc.multiply(pc.random(n * d, initializer=first * 8 + 7), 55_000.0),
                         5_000.0).cast(pa.int64(), safe=False)
        return pa.table({
            "topic": pc.binary_join_element_wise("farm/", device, "/telemetry", ""),
            "device_id": device,
            "ts": ts_us.cast(pa.timestamp("us", "UTC")),
            "received_at": pc.add(ts_us, latency).cast(pa.timestamp("us", "UTC")),
            "seq": pc.add(pc.add(pc.multiply(pc.subtract(t, self.start), d), dev), 1),
            "stream": pa.array(["TELEMETRY"] * (n * d)),
            "temperature": temperature,
            "humidity": humidity,
            "co2": co2,
        })


def line_protocol(table: pa.Table) -> bytes:
    """`telemetry,device_id=gh-07 temperature=21.5,humidity=55.2,co2=612 1700000000`."""
    seconds = pc.divide(table["ts"].cast(pa.int64()), 1_000_000).cast(pa.string())
    fields = [pc.binary_join_element_wise(f"{name}=", table[name].cast(pa.string()), "")
              for name in FIELDS]
    lines = pc.binary_join_element_wise(
        pc.binary_join_element_wise("telemetry,device_id=", table["device_id"], ""),
        pc.binary_join_element_wise(*fields, ","),
        seconds, " ")
    return ("\n".join(lines.to_pylist()) + "\n").encode()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(SAMPLES):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class Figures:
    load_s: float
    hourly_s: float
    day_s: float
    bytes_per_value: float
    rows: tuple[int, int]
    extra: str = ""


@dataclass
class Loaded:
    config: Config
    catalog: Catalog
    seconds: float
    compacted_s: float
    before: Totals
    report: TableReport


def load_lake(fleet: Fleet, data_dir: Path) -> Loaded:
    """The fleet's readings in a lake at `data_dir`, as the writer commits them, compacted and
    with the replaced snapshots' files gone, as maintenance leaves it."""
    config = Config(data_dir=data_dir)
    catalog = open_catalog(config)
    ensure_tables(catalog, config.lake.namespace)
    table = load_table(catalog, config.lake.namespace, TELEMETRY)
    with table.update_schema() as update:
        for name in FIELDS:
            update.add_column(name, DoubleType())
    started = time.perf_counter()
    for chunk in fleet.hours(APPEND_S):
        table.append(chunk.cast(table.schema().as_arrow()))
    appended = time.perf_counter() - started
    before = table_totals(load_table(catalog, config.lake.namespace, TELEMETRY))
    started = time.perf_counter()
    report = Maintenance.from_config(config, catalog).run_table(TELEMETRY)
    compacted = time.perf_counter() - started
    # An hour later: the replaced snapshots expired, their files gone (lake.orphan_grace).
    later = config.lake.model_copy(update={"keep_snapshots_hours": 1e-9, "orphan_grace": 0.0})
    Maintenance(catalog, config.lake.namespace, later, min_snapshot_age=0).run_table(TELEMETRY)
    return Loaded(config, catalog, appended, compacted, before, report)


def run_sensorlake(fleet: Fleet, work: Path) -> Figures:
    lake = load_lake(fleet, work / "sensorlake")
    config, catalog, compacted, before, report = (lake.config, lake.catalog, lake.compacted_s,
                                                  lake.before, lake.report)
    totals = table_totals(load_table(catalog, config.lake.namespace, TELEMETRY))
    on_disk = du(work / "sensorlake" / "warehouse")
    one_day = LAKE_DAY.format(device=fleet.one_device)
    engine = QueryEngine(config, catalog)  # embedded: what a reader in the process gets
    engine.execute("SELECT count(*) FROM telemetry")
    embedded_hourly_s, _ = timed(lambda: engine.execute(LAKE_HOURLY, max_rows=10**6).table)
    embedded_day_s, _ = timed(lambda: engine.execute(one_day, max_rows=10**6).table)
    # The `up` that answers keeps maintenance off: the loading has done it already.
    base, proc = start_up(SENSORLAKE, config.data_dir, {
        "SENSORLAKE_QUERY__MAX_ROWS": "1000000", "SENSORLAKE_LAKE__MAINTENANCE": "false"})
    try:
        def ask(sql: str, shape: str = "rows") -> Any:
            body = json.dumps({"sql": sql, "shape": shape}).encode()
            return json.loads(http(f"{base}/api/v1/query", body,
                                   headers={"Content-Type": "application/json"}))

        ask("SELECT count(*) FROM telemetry")  # the first query reads the manifests
        hourly_s, hourly = timed(lambda: ask(LAKE_HOURLY))
        trunc_s, _ = timed(lambda: ask(LAKE_HOURLY_TRUNC))
        rounded_s, _ = timed(lambda: ask(LAKE_HOURLY_ROUNDED))
        day_s, day = timed(lambda: ask(one_day, "columns"))  # as a chart asks for it
        day_rows_s, _ = timed(lambda: ask(one_day))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    base, proc = start_up(SENSORLAKE, config.data_dir, {
        "SENSORLAKE_QUERY__MAX_ROWS": "1000000", "SENSORLAKE_QUERY__THREADS": "1",
        "SENSORLAKE_LAKE__MAINTENANCE": "false"})
    try:
        ask("SELECT count(*) FROM telemetry")
        one_s, _ = timed(lambda: ask(LAKE_HOURLY))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return Figures(
        load_s=lake.seconds + compacted,
        hourly_s=hourly_s,
        day_s=day_s,
        bytes_per_value=on_disk / (fleet.readings * len(FIELDS)),
        rows=(len(hourly["rows"]), len(day["data"][0])),
        extra=(f"{before.files} appended files ({before.bytes / 1e6:.0f} MB) compacted into "
               f"{totals.files} ({totals.bytes / 1e6:.0f} MB) in {compacted:.0f} s "
               f"({report.compacted_files} rewritten); hourly with date_trunc('hour', ts) instead "
               f"of epoch arithmetic: {trunc_s * 1000:.0f} ms; with to_timestamp(epoch(ts)::BIGINT "
               f"// 3600 * 3600): {rounded_s * 1000:.0f} ms; hourly with query.threads = 1: "
               f"{one_s * 1000:.0f} ms; one device's day as rows instead of columns: "
               f"{day_rows_s * 1000:.0f} ms; in-process engine to Arrow (no HTTP, no JSON): hourly "
               f"{embedded_hourly_s * 1000:.0f} ms, one device {embedded_day_s * 1000:.0f} ms"),
    )


def load_lines(fleet: Fleet, url: str) -> float:
    started = time.perf_counter()
    for chunk in fleet.hours():
        for part in range(0, chunk.num_rows, 10_000):
            http(url, line_protocol(chunk.slice(part, 10_000)))
    return time.perf_counter() - started


def run_influxdb(fleet: Fleet, work: Path) -> Figures | str:
    influxd = shutil.which("influxd")
    if influxd is None:
        return "skipped: influxd not found (apt-get install influxdb)"
    root = work / "influxdb"
    port, rpc = free_port(), free_port()
    conf = root / "influxdb.conf"
    root.mkdir()
    conf.write_text(f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[monitor]
  store-enabled = false
""")
    proc = subprocess.Popen([influxd, "-config", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/ping", proc, "influxd")
        http(f"{base}/query", urllib.parse.urlencode({"q": "CREATE DATABASE bench"}).encode())
        load_s = load_lines(fleet, f"{base}/write?db=bench&precision=s")
        time.sleep(30)  # let the cache snapshot to TSM files, as "shortly after loading"
        on_disk = du(root / "data") + du(root / "wal")

        def ask(q: str) -> Any:
            query = urllib.parse.urlencode({"db": "bench", "q": q, "epoch": "s"})
            return json.loads(http(f"{base}/query?{query}"))

        hourly_s, hourly = timed(lambda: ask(INFLUX_HOURLY))
        day_s, day = timed(lambda: ask(INFLUX_DAY.format(device=fleet.one_device)))
        series = hourly["results"][0].get("series", [])
        return Figures(load_s, hourly_s, day_s, on_disk / (fleet.readings * len(FIELDS)),
                       (sum(len(s["values"]) for s in series),
                        len(day["results"][0]["series"][0]["values"])))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def run_victoriametrics(fleet: Fleet, work: Path) -> Figures | str:
    binary = shutil.which("victoria-metrics")
    if binary is None:
        return "skipped: victoria-metrics not found (apt-get install victoria-metrics)"
    root = work / "victoriametrics"
    port = free_port()
    proc = subprocess.Popen([binary, f"-storageDataPath={root}",
                             f"-httpListenAddr=127.0.0.1:{port}", "-retentionPeriod=1y",
                             "-loggerLevel=ERROR"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health", proc, "victoria-metrics")
        load_s = load_lines(fleet, f"{base}/write")
        http(f"{base}/internal/force_flush")
        time.sleep(30)
        on_disk = du(root)
        start, end = fleet.end - 7 * DAY, fleet.end

        def hourly() -> Any:
            query = urllib.parse.urlencode({
                "query": 'avg_over_time({__name__=~"telemetry_.*"}[1h])',
                "start": start, "end": end, "step": "1h", "nocache": "1"})
            return json.loads(http(f"{base}/api/v1/query_range?{query}"))

        def day() -> list[Any]:
            query = urllib.parse.urlencode({
                "match[]": f'{{__name__=~"telemetry_.*",device_id="{fleet.one_device}"}}',
                "start": end - DAY, "end": end})
            return [json.loads(line) for line in
                    http(f"{base}/api/v1/export?{query}").splitlines() if line]

        hourly_s, hours = timed(hourly)
        day_s, series = timed(day)
        return Figures(load_s, hourly_s, day_s, on_disk / (fleet.readings * len(FIELDS)),
                       (sum(len(s["values"]) for s in hours["data"]["result"]) // len(FIELDS),
                        sum(len(s["values"]) for s in series) // len(FIELDS)))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--only", default="sensorlake,influxdb,vm")
    args = parser.parse_args()
    fleet = Fleet(args.devices, args.days, int(time.time()) - 60)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {fleet.readings:,} readings ({args.devices} devices × "
          f"1/s × {args.days} days), 3 numeric fields; median of {SAMPLES}")
    runners = {"sensorlake": run_sensorlake, "influxdb": run_influxdb, "vm": run_victoriametrics}
    results: dict[str, Figures | str] = {}
    with tempfile.TemporaryDirectory(prefix="history-") as tmp:
        for name in args.only.split(","):
            work = Path(tmp)
            print(f"{name}: loading …", flush=True)
            results[name] = runners[name](fleet, work)
            shown = results[name]
            if isinstance(shown, Figures):
                print(f"  loaded in {shown.load_s:.0f} s; rows {shown.rows}; {shown.extra}",
                      flush=True)
            else:
                print(f"  {shown}")
    print(f"\n{'':<18} {'hourly 7 days':>14} {'one device 24 h':>16} {'bytes/value':>12}")
    for name, fig in results.items():
        if isinstance(fig, Figures):
            print(f"{name:<18} {fig.hourly_s * 1000:>11.0f} ms {fig.day_s * 1000:>13.0f} ms "
                  f"{fig.bytes_per_value:>12.2f}")
    lake = results.get("sensorlake")
    if isinstance(lake, Figures):
        for name, fig in results.items():
            if name != "sensorlake" and isinstance(fig, Figures):
                print(f"{name} takes {fig.hourly_s / lake.hourly_s:.1f}× sensorlake's time on "
                      f"the hourly averages, {fig.day_s / lake.day_s:.1f}× on one device's day, "
                      f"and {fig.bytes_per_value / lake.bytes_per_value:.2f}× its bytes")

if __name__ == "__main__":
    main()
