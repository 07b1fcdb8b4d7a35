"""What the dashboard reads beyond the query API: chart series (`/api/v1/chart`), live device
values as server-sent events (`/api/v1/live`), pipeline health (`/api/v1/health`) and the SQL
console's saved queries (`/api/v1/queries`).

Live values come from one snapshot of device state and the stream's uncommitted tail, taken at
most every half second however many browsers watch, each of which is sent only the devices that
changed since its last event: a reading shows within a second, and ten open dashboards cost
what one does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sensorlake.access.keys import Scope
from sensorlake.alerts.store import AlertStore
from sensorlake.api.app import ApiContext, JSONResponse, iso_seconds, problems
from sensorlake.errors import ChartError, SavedQueryError, SavedQueryNotFound, TableNotFound
from sensorlake.ingest.identity import TimeValueError, parse_time_us
from sensorlake.lake.tables import DEAD_LETTER, TELEMETRY, table_totals
from sensorlake.pipeline.checkpoint import CheckpointStore
from sensorlake.pipeline.service import writer_status
from sensorlake.query.fresh import Tail, tail_from_stream
from sensorlake.query.saved import SavedQueries
from sensorlake.rollup.buckets import numeric_fields
from sensorlake.rollup.chart import MAX_POINTS, SOURCES, ChartRequest, chart
from sensorlake.state import view as state_view
from sensorlake.values import jsonable

LIVE_EVERY_S = 0.5
KEEPALIVE_S = 15.0
MAX_SPAN_DAYS = 400
T = TypeVar("T")


class Cached(Generic[T]):
    """A value computed at most every `every` seconds, shared by whoever asks meanwhile."""

    def __init__(self, every: float, compute: Callable[[], Awaitable[T]]) -> None:
        self._every = every
        self._compute = compute
        self._value: T | None = None
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self) -> T:
        async with self._lock:
            if self._value is None or time.monotonic() - self._at >= self._every:
                self._value = await self._compute()
                self._at = time.monotonic()
            return self._value


def dashboard_routes(ctx: ApiContext) -> tuple[list[Route], dict[str, Scope]]:
    cfg, client, engine = ctx.config, ctx.client, ctx.engine
    checkpoints = CheckpointStore.for_config(cfg)
    saved = SavedQueries.for_config(cfg)
    alerts = AlertStore.for_config(cfg)

    # -- charts ------------------------------------------------------------------------------

    def fields(tail: Tail) -> set[str]:
        """Numeric fields of telemetry, those only uncommitted readings brought included."""
        known = set(numeric_fields(tail.table.schema)) if tail.table is not None else set()
        try:
            table = tail.source or engine.load(TELEMETRY)  # the snapshot the tail was read at
        except TableNotFound:
            return known
        return known | set(numeric_fields(table.schema().as_arrow()))

    async def chart_route(request: Request) -> Response:
        started = time.perf_counter()
        wanted = chart_request(request.query_params)
        tail = await tail_from_stream(client, cfg, engine)

        def answer() -> bytes:
            doc = chart(engine, checkpoints, wanted, tail, fields(tail))
            doc["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 3)
            return orjson.dumps(doc)

        return Response(await asyncio.to_thread(answer), media_type="application/json")

    # -- live values ---------------------------------------------------------------------------

    async def device_docs() -> dict[str, dict[str, Any]]:
        tail = await tail_from_stream(client, cfg, engine)

        def docs() -> dict[str, dict[str, Any]]:
            records = state_view.current(engine.state, tail.table)
            return {d["device_id"]: {"device_id": d["device_id"], "topic": d.get("topic"),
                                     "values": d.get("values") or {},
                                     "last_seen": d.get("last_seen"), "online": d.get("online")}
                    for d in state_view.devices(records, cfg) if "topic" in d}

        return await asyncio.to_thread(docs)

    async def alert_counts() -> dict[str, Any]:
        shown, _ = await asyncio.to_thread(alerts.shown)
        by_device: dict[str, int] = {}
        for alert in shown:
            by_device[alert["device"]] = by_device.get(alert["device"], 0) + 1
        return {"firing": sum(a["status"] == "firing" for a in shown),
                "pending": sum(a["status"] == "pending" for a in shown),
                "by_device": by_device}

    devices_now = Cached(LIVE_EVERY_S, device_docs)
    alerts_now = Cached(1.0, alert_counts)

    async def events() -> AsyncIterator[bytes]:
        sent: dict[str, bytes] = {}
        sent_alerts = b""
        quiet_since = time.monotonic()
        first = True
        yield b"retry: 2000\n\n"
        while ctx.accepting:
            docs = await devices_now.get()
            changed = []
            for name, doc in docs.items():
                encoded = orjson.dumps(doc, default=jsonable)
                if sent.get(name) != encoded:
                    sent[name] = encoded
                    changed.append(doc)
            if changed or first:
                yield _event("devices", {"devices": changed, "full": first})
                first = False
                quiet_since = time.monotonic()
            counts = orjson.dumps(await alerts_now.get())
            if counts != sent_alerts:
                sent_alerts = counts
                yield b"event: alerts\ndata: " + counts + b"\n\n"
                quiet_since = time.monotonic()
            if time.monotonic() - quiet_since >= KEEPALIVE_S:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(LIVE_EVERY_S)

    async def live(request: Request) -> Response:
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    # -- health ----------------------------------------------------------------------------------

    rate: dict[str, float] = {}
    """The last sample of readings received (`value`, `at`) and the rate since the one before."""

    def dead_letters() -> dict[str, Any]:
        sql = (f"SELECT reason, count(*) AS n FROM {DEAD_LETTER} GROUP BY reason "
               "ORDER BY n DESC, reason LIMIT 20")
        try:
            rows = engine.execute(sql, max_rows=20).rows
        except TableNotFound:
            rows = []
        return {"total": table_totals(engine.load(DEAD_LETTER)).rows if rows else 0,
                "reasons": [{"reason": r[0], "count": int(r[1])} for r in rows]}

    async def dead_summary() -> dict[str, Any]:
        return await asyncio.to_thread(dead_letters)

    async def disk_summary() -> dict[str, Any]:
        return await asyncio.to_thread(_disk, cfg.data_dir)

    dead_now = Cached(5.0, dead_summary)
    disk_now = Cached(30.0, disk_summary)

    async def health(request: Request) -> Response:
        status = await writer_status(client) if client.connected else None
        text = ctx.metrics.render() + (status["metrics"].encode() if status else b"")
        figures = _figures(text.decode())
        now = time.monotonic()
        received = figures.get(("sensorlake_readings_received_total", ()))
        per_s = None
        if received is not None:
            if "at" not in rate:
                rate.update(value=received, at=now, per_s=0.0)
            elif now - rate["at"] >= 1.0:
                rate.update(per_s=max(0.0, (received - rate["value"]) / (now - rate["at"])),
                            value=received, at=now)
            per_s = rate["per_s"]
        last = figures.get(("sensorlake_last_commit_timestamp_seconds", ()))
        tables: dict[str, dict[str, Any]] = {}
        for (name, labels), value in figures.items():
            label = dict(labels).get("table")
            if label is None:
                continue
            if name == "sensorlake_table_data_files":
                tables.setdefault(label, {"name": label})["files"] = int(value)
            elif name == "sensorlake_table_data_bytes":
                tables.setdefault(label, {"name": label})["bytes"] = int(value)
        found = problems(ctx, status)
        if status is None:
            found.append({"problem": "the worker does not answer", "since": None})
        doc = {
            "status": "ok" if status and status.get("ready") and not found else "degraded",
            "ingest_per_s": None if per_s is None else round(per_s, 1),
            "lag": figures.get(("sensorlake_consumer_lag_messages", ())),
            "last_commit": iso_seconds(last) if last else None,
            "last_commit_age_s": round(time.time() - last, 1) if last else None,
            "dead_letters": await dead_now.get(),
            "tables": sorted(tables.values(), key=lambda t: t["name"]),
            "disk": await disk_now.get(),
            "problems": found,
        }
        return JSONResponse(doc)

    # -- saved queries --------------------------------------------------------------------------

    async def queries(request: Request) -> Response:
        return JSONResponse({"queries": await asyncio.to_thread(saved.list)})

    async def query_save(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) \
                or not isinstance(body.get("sql"), str):
            raise SavedQueryError('the body needs "name" and "sql" (strings)',
                                  hint='send {"name": "hot greenhouses", "sql": "SELECT ..."}')
        await asyncio.to_thread(saved.save, body["name"], body["sql"])
        return JSONResponse({"name": body["name"]}, status_code=201)

    async def query_delete(request: Request) -> Response:
        name = request.path_params["name"]
        if not await asyncio.to_thread(saved.delete, name):
            raise SavedQueryNotFound(f"no saved query named {name!r}",
                                     hint="GET /api/v1/queries lists them")
        return Response(status_code=204)

    routes = [
        Route("/api/v1/chart", chart_route, methods=["GET"]),
        Route("/api/v1/live", live, methods=["GET"]),
        Route("/api/v1/health", health, methods=["GET"]),
        Route("/api/v1/queries", queries, methods=["GET"]),
        Route("/api/v1/queries", query_save, methods=["POST"]),
        Route("/api/v1/queries/{name}", query_delete, methods=["DELETE"]),
    ]
    scopes = {"/api/v1/chart": Scope.read, "/api/v1/live": Scope.read,
              "/api/v1/health": Scope.read, "GET /api/v1/queries": Scope.read}
    return routes, scopes  # saving and deleting a query: admin


def chart_request(params: Any) -> ChartRequest:
    field = params.get("field")
    if not field:
        raise ChartError("'field' is missing", hint="for example ?field=temperature")
    end = _moment("to", params.get("to"), time.time())
    start = _moment("from", params.get("from"), end - 86_400)
    if start >= end:
        raise ChartError("'from' must be before 'to'", hint=None)
    if end - start > MAX_SPAN_DAYS * 86_400:
        raise ChartError(f"the range is more than {MAX_SPAN_DAYS} days",
                         hint="ask for a shorter range")
    source = params.get("source", "auto")
    if source not in SOURCES:
        raise ChartError(f"source {source!r} is not one of {', '.join(SOURCES)}",
                         hint="leave it out to let the range choose")
    try:
        points = int(params.get("points", MAX_POINTS))
    except ValueError:
        points = -1
    if not 10 <= points <= 10_000:
        raise ChartError("'points' must be 10 to 10000", hint=f"the default is {MAX_POINTS}")
    devices = tuple(d for d in (params.get("devices") or "").split(",") if d)
    if len(devices) > 1000:
        raise ChartError("more than 1000 devices", hint="leave 'devices' out for all of them")
    return ChartRequest(field, int(start * 1e6), int(end * 1e6), devices, source, points)


def _moment(key: str, value: str | None, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        return parse_time_us(value) / 1e6
    except TimeValueError:
        raise ChartError(f"'{key}' {value!r} is neither an ISO 8601 time nor Unix seconds",
                         hint="for example 2026-12-01T08:00:00Z") from None


def _event(name: str, data: Any) -> bytes:
    return (f"event: {name}\ndata: ".encode() + orjson.dumps(data, default=jsonable)
            + b"\n\n")


def _figures(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, summed over the processes that reported it
    (times: the latest)."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            if sample.name.endswith("_timestamp_seconds"):  # the latest, not a sum
                found[key] = max(found.get(key, 0.0), float(sample.value))
            else:
                found[key] = found.get(key, 0.0) + float(sample.value)
    return found


def _disk(data_dir: Path) -> dict[str, Any]:
    used = 0
    for root, _, files in os.walk(data_dir):
        for name in files:
            try:
                used += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    free = shutil.disk_usage(data_dir).free if data_dir.exists() else None
    return {"data_bytes": used, "free_bytes": free}
