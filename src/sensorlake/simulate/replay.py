"""Replaying recorded readings (CSV or JSON lines) faster than real time.

A class that replays five weather stations' history wants the gaps between events kept, only
shorter: event i is sent `(t_i - t_0) / speed` after the start. Times are either kept (the lake
then holds the original event times) or shifted so the first event happens now.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sensorlake.errors import SimulateError
from sensorlake.ingest.identity import TIME_KEYS, TimeValueError, parse_time_us
from sensorlake.simulate.run import Progress, Sink, stopped_before

DEVICE_COLUMNS = ("device_id", "deviceId", "device", "thing", "station", "weather_station")


@dataclass(frozen=True)
class Event:
    at_us: int
    device: str
    reading: dict[str, Any]


def _cell(value: str) -> Any:
    """CSV cells as numbers where they are numbers, so the lake infers numeric columns."""
    text = value.strip()
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    yield {k: _cell(v) for k, v in row.items() if k is not None and v is not None}
            return
        with path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    value = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise SimulateError(f"{path}:{number} is not JSON: {exc}") from None
                if not isinstance(value, dict):
                    raise SimulateError(f"{path}:{number} is not a JSON object")
                yield value
    except OSError as exc:
        raise SimulateError(f"cannot read {path}: {exc}") from exc


def _pick(row: dict[str, Any], wanted: str | None, candidates: tuple[str, ...], what: str,
          path: Path) -> str:
    if wanted:
        if wanted not in row:
            raise SimulateError(f"{path} has no column {wanted!r}",
                                hint=f"its columns: {', '.join(row)}")
        return wanted
    for name in candidates:
        if name in row:
            return name
    raise SimulateError(f"{path} has no {what} column I recognise",
                        hint=f"name it with --{what}-column (columns: {', '.join(row)})")


def load_events(path: Path, time_column: str | None = None,
                device_column: str | None = None) -> list[Event]:
    """Every row as an event, in time order (a stable sort keeps file order for equal times)."""
    events: list[Event] = []
    tcol = dcol = ""
    for number, row in enumerate(_rows(path), 1):
        if not tcol:
            tcol = _pick(row, time_column, (*TIME_KEYS, "datetime", "date"), "time", path)
            dcol = _pick(row, device_column, DEVICE_COLUMNS, "device", path)
        try:
            at_us = parse_time_us(row.get(tcol))
        except TimeValueError as exc:
            raise SimulateError(f"{path} row {number}: {exc}",
                                hint="times must be ISO 8601 or epoch s/ms/µs") from None
        device = row.get(dcol)
        if device is None or str(device).strip() == "":
            raise SimulateError(f"{path} row {number} has no {dcol}")
        events.append(Event(at_us, str(device), row))
    if not events:
        raise SimulateError(f"{path} holds no readings")
    events.sort(key=lambda e: e.at_us)
    return events


def _iso(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC).isoformat().replace("+00:00", "Z")


async def replay(events: list[Event], sink: Sink, progress: Progress, stop: asyncio.Event, *,
                 speed: float, shift_to_now: bool, topic: str,
                 time_key: str = "ts",
                 on_batch: Callable[[Progress], None] | None = None) -> Progress:
    """Send each event `(t - t0) / speed` after the start; events due together go together."""
    if not 0 < speed <= 1_000_000:
        raise SimulateError(f"speed must be more than 0 and at most 1000000, not {speed}")
    loop = asyncio.get_running_loop()
    start = loop.time()
    first = events[0].at_us
    shift = int(time.time() * 1e6) - first if shift_to_now else 0
    i = 0
    try:
        while i < len(events) and not stop.is_set():
            if await stopped_before(start + (events[i].at_us - first) / 1e6 / speed, stop):
                break
            batch = []
            now = loop.time()
            while i < len(events) and start + (events[i].at_us - first) / 1e6 / speed <= now:
                event = events[i]
                reading = dict(event.reading)
                reading[time_key] = _iso(event.at_us + shift)
                batch.append((topic.replace("{device}", event.device), reading))
                i += 1
            progress.sent += len(batch)
            acked = await sink.send(batch)
            progress.acked += acked
            progress.failed += len(batch) - acked
            if on_batch is not None:
                on_batch(progress)
    finally:
        progress.finished = time.monotonic()
        await sink.close()
    return progress
