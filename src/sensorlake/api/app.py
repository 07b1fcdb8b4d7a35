"""The HTTP API: ingest, query, tables, health and metrics.

Every handler validates what it is sent and answers errors as `{"error", "hint"}` with a status a
client can act on; nothing is written to the stream unless the whole request was acceptable.
Who may call which route (API keys, scopes, rate limits) is decided before any handler runs, in
`api/auth.py`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sensorlake.access.keys import Scope
from sensorlake.api.auth import Access, AccessGuard, check_device_topic, own_readings, request_key
from sensorlake.api.simulations import Simulations, plan_from_json
from sensorlake.config import Config
from sensorlake.devices.listing import COLUMNS as DEVICE_COLUMNS
from sensorlake.devices.listing import device_rows
from sensorlake.errors import (
    DeviceNotSeen,
    IngestError,
    PayloadTooLarge,
    QueryError,
    SensorlakeError,
    SimulateError,
    StorageFull,
    StreamError,
)
from sensorlake.ingest.body import pack_messages, parse_body
from sensorlake.ingest.identity import IdentityRules
from sensorlake.lake.tables import TELEMETRY
from sensorlake.metrics import ApiMetrics
from sensorlake.pipeline.service import writer_status
from sensorlake.query.engine import QueryEngine, check_query
from sensorlake.query.fresh import NO_TAIL, tail_from_stream
from sensorlake.state import view as state_view
from sensorlake.state.records import DEVICE_STATE
from sensorlake.stream.connection import StreamClient
from sensorlake.stream.storage import StorageWatch
from sensorlake.stream.subjects import subject_for_topic
from sensorlake.topics import topic_matches
from sensorlake.values import jsonable

log = logging.getLogger(__name__)

_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")
STORAGE_HINT = ("free space on that disk: ingest resumes by itself once there is room (what "
                "was acknowledged before is kept); readings leave the stream after "
                "stream.max_age_hours")


@dataclass
class ApiContext:
    config: Config
    client: StreamClient
    engine: QueryEngine
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    accepting: bool = True
    restarts: Any = None
    """Callable returning {child: restarts} of what `up` supervises (None when nothing is)."""
    simulations: Simulations | None = None
    storage: StorageWatch | None = None
    """Watched by `up` (the embedded server's disk); None elsewhere."""
    local_token: str | None = None
    """The read-scope token `up` keeps in its run file for commands on this machine."""
    reloaded: dict[str, Any] | None = None
    """The outcome of the last configuration reload (SIGHUP): at, ok, message."""



class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def json_bytes(content: Any) -> bytes:
    return orjson.dumps(content, default=jsonable, option=orjson.OPT_NON_STR_KEYS)


def iso_seconds(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def problems(ctx: ApiContext, status: dict[str, Any] | None) -> list[dict[str, Any]]:
    """What keeps the pipeline from being healthy beyond its processes running: a full disk
    under the stream, an output that cannot write (`status`: the worker's reply)."""
    found: list[dict[str, Any]] = []
    storage = ctx.storage
    if storage is not None and storage.problem is not None and storage.since is not None:
        found.append({"problem": storage.problem, "since": iso_seconds(storage.since)})
    degraded = status.get("degraded") if status else None
    if degraded:
        found.append({"problem": degraded["reason"], "since": iso_seconds(degraded["since"])})
    return found


def _error(exc: SensorlakeError) -> JSONResponse:
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    message = str(exc).split(" — ", 1)[0]
    return JSONResponse({"error": message, "hint": exc.hint}, status_code=exc.status,
                        headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"the body is {declared} bytes, more than the limit of {limit}",
            hint="send smaller batches or raise ingest.max_body_bytes",
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"the body is more than the limit of {limit} bytes",
                hint="send smaller batches or raise ingest.max_body_bytes",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(ctx: ApiContext) -> Starlette:
    cfg = ctx.config
    identity = IdentityRules(cfg.ingest.device_id_from)

    async def ingest(request: Request) -> Response:
        if not ctx.accepting:
            raise StreamError("shutting down, not taking input", hint="retry in a moment")
        topic = request.query_params.get("topic")
        if not topic:
            raise IngestError(
                "the query parameter 'topic' is missing",
                hint="POST /api/v1/ingest?topic=farm/gh-01/telemetry",
            )
        subject = subject_for_topic(cfg.stream.subject_prefix, topic)
        if not topic_matches(cfg.stream.topics, topic):
            raise IngestError(
                f"topic {topic!r} is not captured by stream.topics {cfg.stream.topics}",
                hint="send it under a captured topic, or add a filter for it to stream.topics",
            )
        api_key = request_key(request)
        if api_key is not None:
            check_device_topic(api_key, topic, identity)
        key = request.headers.get("idempotency-key")
        if key is not None and not _KEY.fullmatch(key):
            raise IngestError(
                "the Idempotency-Key header must be 1–128 characters of A-Z a-z 0-9 . _ : -",
                hint="use e.g. a UUID per batch, and the same one when you retry that batch",
            )
        body = await _read_body(request, cfg.ingest.max_body_bytes)
        accepted, rejected = parse_body(body, request.headers.get("content-type"))
        if api_key is not None:
            accepted, rejected = own_readings(api_key, topic, accepted, rejected, identity)
        messages = pack_messages(accepted, cfg.stream.max_payload)
        if messages:
            # Per API key, so one key's client cannot suppress another's batch by reusing its
            # Idempotency-Key.
            owner = f"{api_key.id}:" if api_key is not None else ""
            msg_ids = [f"{owner}{key}:{i}" for i in range(len(messages))] if key else None
            await publish(subject, messages, msg_ids)
        ctx.metrics.ingested.inc(len(accepted))
        ctx.metrics.rejected.inc(len(rejected))
        result = {
            "accepted": len(accepted),
            "rejected": [{"index": r.index, "error": r.error} for r in rejected],
        }
        return JSONResponse(result, status_code=200 if accepted else 400)

    async def publish(subject: str, messages: list[bytes], msg_ids: list[str] | None) -> None:
        """Into the stream, or at once a StorageFull that says why the stream cannot take it."""
        storage = ctx.storage
        if storage is not None and storage.problem is not None:
            raise StorageFull(storage.problem, hint=STORAGE_HINT)
        try:
            await ctx.client.publish_many(subject, messages, msg_ids=msg_ids)
        except StreamError as exc:
            reason = storage.note_failure() if storage is not None else None
            if reason is not None:
                raise StorageFull(reason, hint=STORAGE_HINT) from exc
            raise

    async def query(request: Request) -> Response:
        try:
            payload = orjson.loads(await _read_body(request, 1024 * 1024))
        except orjson.JSONDecodeError:
            raise QueryError(
                "the body is not JSON", hint='send {"sql": "SELECT ..."}'
            ) from None
        sql = payload.get("sql") if isinstance(payload, dict) else None
        if not isinstance(sql, str) or not sql.strip():
            raise QueryError("'sql' is missing or empty", hint='send {"sql": "SELECT ..."}')
        max_rows = payload.get("max_rows", cfg.query.max_rows)
        if not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 0:
            raise QueryError("'max_rows' must be a non-negative integer")
        max_rows = min(max_rows, cfg.query.max_rows)
        shape = payload.get("shape", "rows")
        answer_as = payload.get("format", "json")
        if answer_as not in ("json", "csv"):
            raise QueryError("'format' must be \"json\" or \"csv\"",
                             hint='"csv" answers text/csv, as the dashboard downloads it')
        if shape not in ("rows", "columns"):
            raise QueryError("'shape' must be \"rows\" or \"columns\"",
                             hint='"columns" returns one array per column under "data"')
        checked = check_query(sql)
        tail = (await tail_from_stream(ctx.client, cfg, ctx.engine)
                if ctx.engine.needs_tail(checked) else NO_TAIL)

        def answer() -> bytes:
            """In a thread, JSON included: a long result must not hold up the event loop,
            which serves ingest."""
            result = ctx.engine.execute(checked, tails={TELEMETRY: tail.table},
                                        loaded=tail.loaded,
                                        max_rows=max_rows, notes=tail.notes)
            if answer_as == "csv":
                return result.to_csv()
            return json_bytes(result.to_json(shape))

        body = await asyncio.to_thread(answer)
        if answer_as == "csv":
            return Response(body, media_type="text/csv; charset=utf-8", headers={
                "Content-Disposition": 'attachment; filename="query.csv"'})
        return Response(body, media_type="application/json")

    async def tables(request: Request) -> Response:
        names = await asyncio.to_thread(ctx.engine.table_names)
        views = ctx.engine.view_names()  # read like tables; listed with them and on their own
        lake = sorted([*(n for n in names if n not in views), DEVICE_STATE])
        return JSONResponse({"tables": lake + views, "views": views})

    async def rules(request: Request) -> Response:
        """The configured rules, with what the worker counted for each since it started."""
        status = await writer_status(ctx.client)
        counted = (status or {}).get("rules") or {}
        listed = []
        for rule in ctx.config.rules:  # reloaded with SIGHUP
            counters = counted.get(rule.name) or {"matched": 0, "emitted": 0, "errors": 0,
                                                  "last_error": None}
            listed.append({"name": rule.name, "sql": rule.sql, "enabled": rule.enabled,
                           "actions": rule.actions, "table": rule.table,
                           "running": rule.name in counted, **counters})
        return JSONResponse({"rules": listed, "worker": "running" if status else "unavailable"})

    async def describe(request: Request) -> Response:
        info = await asyncio.to_thread(ctx.engine.describe, request.path_params["name"])
        return JSONResponse(info)

    async def devices(request: Request) -> Response:
        """The registry and every device that sent, each with its state (online, values)."""
        tail = await tail_from_stream(ctx.client, cfg, ctx.engine)

        def listed() -> list[dict[str, Any]]:
            rows = device_rows(cfg, ctx.engine, tail.table)
            states = {doc["device_id"]: doc for doc in state_view.devices(
                state_view.current(ctx.engine.state, tail.table), cfg)}
            return [{**dict(zip(DEVICE_COLUMNS, row, strict=True)),
                     "online": states.get(row[0], {}).get("online"),
                     "values": states.get(row[0], {}).get("values", {})} for row in rows]

        return JSONResponse({"devices": await asyncio.to_thread(listed),
                             "offline_after": cfg.devices.offline_after})

    async def device_state(request: Request) -> Response:
        """One device's state: latest values, first and last seen, online or offline."""
        name = request.path_params["id"]
        tail = await tail_from_stream(ctx.client, cfg, ctx.engine)
        records = await asyncio.to_thread(state_view.current, ctx.engine.state, tail.table, name)
        docs = state_view.devices(records, cfg)
        if not docs:
            raise DeviceNotSeen(f"device {name!r} has sent no reading since device state began",
                                hint="GET /api/v1/devices lists the devices that did")
        return JSONResponse({**docs[0], "offline_after": cfg.devices.offline_after})

    sims = ctx.simulations = ctx.simulations or Simulations(ctx.client, cfg)

    async def simulate_start(request: Request) -> Response:
        if not ctx.accepting:
            raise StreamError("shutting down", hint="retry once sensorlake is back")
        try:
            body = orjson.loads(await _read_body(request, 64 * 1024))
        except orjson.JSONDecodeError:
            raise SimulateError("the body is not JSON",
                                hint='send e.g. {"count": 12, "interval": 10}') from None
        sim = sims.start(plan_from_json(body))
        return JSONResponse(sim.to_json(), status_code=201)

    async def simulate_get(request: Request) -> Response:
        return JSONResponse(sims.get(request.path_params["id"]).to_json())

    async def simulate_stop(request: Request) -> Response:
        return JSONResponse((await sims.stop(request.path_params["id"])).to_json())

    async def healthz(request: Request) -> Response:
        stream_ok = ctx.client.connected
        status = await writer_status(ctx.client) if stream_ok else None
        writer_ok = bool(status and status.get("ready"))
        found = problems(ctx, status)
        ok = stream_ok and writer_ok and ctx.accepting and not found
        body: dict[str, Any] = {
            "status": "ok" if ok else "degraded",
            "stream": "connected" if stream_ok else "disconnected",
            "writer": "running" if writer_ok else "unavailable",
            "accepting": ctx.accepting,
        }
        if found:
            body["problems"] = found
        if status:
            body["committed"] = status.get("committed")
        if ctx.restarts is not None:
            body["restarts"] = ctx.restarts()
        if ctx.reloaded is not None:
            body["reloaded"] = ctx.reloaded
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        status = await writer_status(ctx.client)
        writer = status["metrics"].encode() if status else b""
        return Response(ctx.metrics.render() + writer, media_type="text/plain; version=0.0.4")

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SensorlakeError)
        if exc.status >= 500:
            log.warning("%s %s failed: %s", request.method, request.url.path, exc)
        return _error(exc)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/api/v1/ingest", ingest, methods=["POST"]),
        Route("/api/v1/query", query, methods=["POST"]),
        Route("/api/v1/tables", tables, methods=["GET"]),
        Route("/api/v1/tables/{name}", describe, methods=["GET"]),
        Route("/api/v1/devices", devices, methods=["GET"]),
        Route("/api/v1/devices/{id}", device_state, methods=["GET"]),
        Route("/api/v1/rules", rules, methods=["GET"]),
        Route("/api/v1/simulate", simulate_start, methods=["POST"]),
        Route("/api/v1/simulate/{id}", simulate_get, methods=["GET"]),
        Route("/api/v1/simulate/{id}", simulate_stop, methods=["DELETE"]),
    ]
    from sensorlake.api.alerts import alert_routes
    from sensorlake.api.dashboard import dashboard_routes
    from sensorlake.dashboard.routes import dashboard_routes as dashboard_files

    more, more_scopes = alert_routes(cfg, ctx.engine)
    routes += more
    shown, shown_scopes = dashboard_routes(ctx)
    routes += shown
    # The scope each route needs; a route missing here needs admin (see api/auth.py).
    scopes = {
        **more_scopes,
        **shown_scopes,
        "/metrics": Scope.read,
        "/api/v1/ingest": Scope.ingest,
        "/api/v1/query": Scope.read,
        "/api/v1/tables": Scope.read,
        "/api/v1/tables/{name}": Scope.read,
        "/api/v1/devices": Scope.read,
        "/api/v1/devices/{id}": Scope.read,
        "/api/v1/rules": Scope.read,
        "GET /api/v1/simulate/{id}": Scope.read,
    }
    guard = Middleware(AccessGuard, access=Access(cfg, local_token=ctx.local_token),
                       routes=routes, scopes=scopes)
    return Starlette(
        routes=[*routes, *dashboard_files()],  # the app's files: open (see api/auth.py)
        middleware=[guard],
        exception_handlers={SensorlakeError: on_error},
    )
