"""Serves the dashboard's files from the installed package: no CDN, no build step, so that it
works on a farm LAN with no uplink. The files hold no data; every figure they show comes from
the API, which asks for a key where keys are required."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
STATIC_PREFIX = "/static/"
"""Served to anyone (`api/auth.py`)."""
SECURITY_HEADERS = {
    # Only our own files: nothing may load from elsewhere, nor the page be framed.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={**SECURITY_HEADERS,
                                                        "Cache-Control": "no-cache"})


def dashboard_routes() -> list[BaseRoute]:
    return [Route("/", index, methods=["GET", "HEAD"]),
            Mount(STATIC_PREFIX.rstrip("/"), app=StaticFiles(directory=STATIC, check_dir=False),
                  name="static")]
