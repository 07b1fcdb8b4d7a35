"""Access control in front of every HTTP route: API keys, scopes, device binding, rate limits.

It is ASGI middleware rather than a check inside each handler, so that a route added later is
guarded by default: a route declares the scope it needs, and one that declares none needs
`admin`. Only /healthz stays open, for load balancers and supervisors that hold no key, and the
dashboard's own files, which hold no data.

On a loopback address with no key created, the API is open, as a single-user install on one
machine expects; the first key closes it. Elsewhere a key is always needed: readings and
queries must not be open to a whole network because nobody created a key yet.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from sensorlake.access.keys import ApiKey, KeyStore, Scope
from sensorlake.access.live import LiveKeys
from sensorlake.access.ratelimit import RateLimiter
from sensorlake.config import Config
from sensorlake.dashboard.routes import STATIC_PREFIX
from sensorlake.errors import AccessDenied, AccessError, RateLimited, SensorlakeError
from sensorlake.hosts import is_loopback
from sensorlake.ingest.body import Rejected, screen
from sensorlake.ingest.identity import IdentityRules

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/"})
"""With STATIC_PREFIX, the dashboard's own files: they hold no data, and the page must load to
ask for a key."""
LOCAL_KEY = ApiKey("local", Scope.read, None, "commands on this machine (run file token)", "",
                   None, None)
"""What the run file's token acts as: it reads, nothing more."""
_KEY_IN_SCOPE = "sensorlake.api_key"


def request_key(request: Request) -> ApiKey | None:
    """The key a request was authorised with; None when the API is open."""
    key = request.scope.get(_KEY_IN_SCOPE)
    return key if isinstance(key, ApiKey) else None


def error_response(exc: SensorlakeError) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    elif exc.status == 503:
        headers["Retry-After"] = "1"
    elif exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="sensorlake"'
    message = str(exc).split(" — ", 1)[0]
    return Response(orjson.dumps({"error": message, "hint": exc.hint}), status_code=exc.status,
                    media_type="application/json", headers=headers)


class Access:
    """Decides, for one request, whether it may proceed and as which key."""

    def __init__(self, config: Config, keys: LiveKeys | None = None,
                 local_token: str | None = None) -> None:
        self.host = config.server.host
        self.local_token = local_token
        self.always = not is_loopback(config.server.host)
        self.keys = keys or LiveKeys(KeyStore(config.data_dir))
        self.limiter = RateLimiter(config.api.rate_limit, config.api.rate_limit_burst)

    async def authorize(self, headers: Headers, required: Scope | None, what: str
                        ) -> ApiKey | None:
        """The key the request acts as (None: the API is open); raises AccessError otherwise.

        `required` None is a path no route serves: any valid key may learn that it is a 404,
        no key may not.
        """
        keys = await self.keys.current()
        if not self.always and not keys.any_active:
            return None
        wanted = required or Scope.read
        create = f"`sensorlake keys create --scope {wanted}`"
        header = headers.get("authorization")
        if header is None:
            if not keys.any_active:
                raise AccessError(
                    f"the HTTP API on {self.host} needs an API key and none has been created",
                    hint=f"create one on the server with {create} and send it as "
                    "`Authorization: Bearer <key>`",
                )
            raise AccessError(
                "this request needs an API key",
                hint=f"send `Authorization: Bearer <key>`; create a key with {create}",
            )
        scheme, _, presented = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise AccessError(
                "the Authorization header is not `Bearer <key>`",
                hint=f"send `Authorization: Bearer <key>`; create a key with {create}",
            )
        if self.local_token and hmac.compare_digest(presented.strip(), self.local_token):
            key = LOCAL_KEY  # a command on this machine, holding the run file's token
        else:
            key = keys.authenticate(presented.strip())
        if required is not None and not key.scope.allows(required):
            raise AccessDenied(
                f"API key {key.id} has scope {key.scope}, and {what} needs scope {required}",
                hint=(f"use a key with scope {required}"
                      + ("" if required is Scope.admin else " or admin")
                      + f"; create one with {create}"),
            )
        if key is not LOCAL_KEY:
            self.limiter.take(key.id)
            self.keys.used(key.id)
        return key


class AccessGuard:
    """The middleware: finds the scope the matching route needs and asks `Access`."""

    def __init__(self, app: ASGIApp, *, access: Access, routes: Sequence[BaseRoute],
                 scopes: Mapping[str, Scope]) -> None:
        self.app = app
        self.access = access
        self.routes = routes
        self.scopes = scopes
        """Route path (as declared, e.g. /api/v1/tables/{name}), or "METHOD path", → the scope
        it needs."""

    def required(self, scope: AsgiScope) -> Scope | None:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                path = str(getattr(route, "path", ""))
                # "METHOD path" when one path serves methods of different scopes.
                return self.scopes.get(f"{scope['method']} {path}",
                                       self.scopes.get(path, Scope.admin))
        return None

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS \
                or scope["path"].startswith(STATIC_PREFIX):
            await self.app(scope, receive, send)
            return
        what = f"{scope['method']} {scope['path']}"
        try:
            key = await self.access.authorize(Headers(scope=scope), self.required(scope), what)
        except SensorlakeError as exc:
            level = logging.DEBUG if isinstance(exc, RateLimited) else logging.INFO
            log.log(level, "refused %s: %s", what, str(exc).split(" — ", 1)[0])
            await error_response(exc)(scope, receive, send)
            return
        if key is not None:
            scope[_KEY_IN_SCOPE] = key
        await self.app(scope, receive, send)


def check_device_topic(key: ApiKey, topic: str, identity: IdentityRules) -> None:
    """A device-bound key writes only where its device's readings go (ingest.device_id_from).

    With `device_id_from = "none"` no topic level names the device; then every reading must
    name it in its payload instead (see `own_readings`).
    """
    level = identity.topic_level
    if key.device is None or level is None:
        return
    levels = topic.split("/")
    found = levels[level] if level < len(levels) else None
    if found == key.device:
        return
    example = levels + ["telemetry"] * (level + 1 - len(levels))
    example[level] = key.device
    names = f"names {found!r}" if found is not None else "has no such level"
    raise AccessDenied(
        f"API key {key.id} may only write as device {key.device!r}, but topic {topic!r} "
        f"{names} at level {level} (ingest.device_id_from)",
        hint=f"send to a topic with {key.device!r} at level {level}, e.g. "
        f"{'/'.join(example)}",
    )


def own_readings(
    key: ApiKey, topic: str, accepted: list[bytes], rejected: list[Rejected],
    identity: IdentityRules,
) -> tuple[list[bytes], list[Rejected]]:
    """Move readings that name a device other than the key's into `rejected`, by their index
    in the request, so the sender learns which ones and the rest is still stored."""
    if key.device is None:
        return accepted, rejected

    def refusal(reading: bytes) -> str | None:
        payload: Any = orjson.loads(reading)
        device = identity.device_id(payload, topic)
        if device == key.device:
            return None
        named = f"names device {device!r}" if device is not None else "names no device"
        return f"the reading {named}; this API key may only write as {key.device!r}"

    return screen(accepted, rejected, refusal)
