"""`/api/v1/alerts` (firing and pending, with silences), `/api/v1/anomalies` (the anomalies
table, filtered by device, detector and time) and silences."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sensorlake.access.keys import Scope
from sensorlake.alerts.notify import iso
from sensorlake.alerts.silence import parse_duration, silence
from sensorlake.alerts.store import AlertStore
from sensorlake.config import Config
from sensorlake.detect.output import ANOMALIES
from sensorlake.errors import AlertsError, TableNotFound
from sensorlake.query.engine import QueryEngine
from sensorlake.values import jsonable

MAX_LIMIT = 10_000


def alert_routes(cfg: Config, engine: QueryEngine) -> tuple[list[Route], dict[str, Scope]]:
    store = AlertStore.for_config(cfg)

    async def alerts(request: Request) -> Response:
        shown, at = await asyncio.to_thread(store.shown)
        silences = await asyncio.to_thread(store.silences)
        status = request.query_params.get("status")
        if status not in (None, "firing", "pending"):
            raise AlertsError(f"status {status!r} is not firing or pending",
                               hint="leave it out for both")
        listed = [a for a in shown if status is None or a["status"] == status]
        return JSONResponse({
            "alerts": listed, "as_of": iso(at),
            "silences": [{"device": s["device"], "until": iso(s["until"]),
                          "comment": s["comment"]} for s in silences.values()],
            "waiting": await asyncio.to_thread(store.waiting)})

    async def silence_add(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise AlertsError("the body is not JSON",
                               hint='send {"device": "gh-01", "for": "2h"}') from None
        if not isinstance(body, dict) or not isinstance(body.get("device"), str):
            raise AlertsError('the body needs "device" (a string)',
                               hint='send {"device": "gh-01", "for": "2h"}')
        seconds = parse_duration(str(body.get("for", "2h")))
        until = await asyncio.to_thread(silence, store, body["device"], seconds,
                                        str(body.get("comment", ""))[:500])
        return JSONResponse({"device": body["device"], "until": iso(until)}, status_code=201)

    async def silence_remove(request: Request) -> Response:
        await asyncio.to_thread(store.silence, request.path_params["device"], 0.0)
        return Response(status_code=204)

    async def anomalies(request: Request) -> Response:
        params = request.query_params
        where = []
        for key in ("device", "detector"):
            value = params.get(key)
            if value is not None:
                column = "device_id" if key == "device" else key
                where.append(f"{column} = '{_text(key, value)}'")
        for key, op in (("since", ">="), ("until", "<")):
            value = params.get(key)
            if value is not None:
                where.append(f"ts {op} TIMESTAMPTZ '{_time(key, value)}'")
        try:
            limit = int(params.get("limit", "100"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_LIMIT:
            raise AlertsError(f"limit must be 1 to {MAX_LIMIT}",
                               hint="page with until= the ts of the oldest row shown")
        sql = (f"SELECT * FROM {ANOMALIES}" + (" WHERE " + " AND ".join(where) if where else "")
               + f" ORDER BY ts DESC, detected_at DESC LIMIT {limit}")

        def run() -> list[dict[str, Any]]:
            try:
                result = engine.execute(sql, max_rows=limit)
            except TableNotFound:
                return []  # no detector ever ran
            return [{name: jsonable(value) for name, value in zip(result.columns, row,
                                                                   strict=True)}
                    for row in result.rows]

        rows = await asyncio.to_thread(run)
        return JSONResponse({"anomalies": rows, "count": len(rows),
                             "as_of": iso(time.time())})

    routes = [
        Route("/api/v1/alerts", alerts, methods=["GET"]),
        Route("/api/v1/alerts/silences", silence_add, methods=["POST"]),
        Route("/api/v1/alerts/silences/{device}", silence_remove, methods=["DELETE"]),
        Route("/api/v1/anomalies", anomalies, methods=["GET"]),
    ]
    scopes = {"/api/v1/alerts": Scope.read, "/api/v1/anomalies": Scope.read}
    return routes, scopes  # silences: admin


def _text(key: str, value: str) -> str:
    if not value or len(value) > 256 or any(ord(c) < 32 for c in value):
        raise AlertsError(f"{key} must be 1 to 256 printable characters", hint=None)
    return value.replace("'", "''")


def _time(key: str, value: str) -> str:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise AlertsError(f"{key} {value!r} is not an ISO 8601 time",
                           hint="for example 2026-12-01T08:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()
