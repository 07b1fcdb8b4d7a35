"""Asking the `up` that serves this data folder, over its HTTP API, instead of starting an engine.

A running server has the catalog open, the manifests cached and the stream connected; a new
process would spend over a second importing and loading all that before its first row. Only the
standard library is used here, so that the answer costs little more than the query itself.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sensorlake.configsource import data_dir_of, raw_settings
from sensorlake.errors import QueryError, ReloadRefused, ServerStartError
from sensorlake.runfile import running

if TYPE_CHECKING:
    from sensorlake.config import Config

_ANSWER_S = 300.0
"""Longer than any query.timeout a user would set: the server ends a long query itself."""
_FALL_BACK = frozenset({401, 403})
"""Answers after which the command runs the query itself: this server does not take the
run file's token (an older version, or one restarted since the file was read)."""


def ask_running(config: Path | None, data_dir: Path | None, sql: str, max_rows: int
                ) -> dict[str, Any] | None:
    """The result document of POST /api/v1/query; None when no `up` runs on this data folder
    or it cannot be asked, so that the caller runs the query itself."""
    info = running(data_dir_of(raw_settings(config, {"data_dir": data_dir})))
    if info is None or not info.token or not info.local_http.startswith("http://"):
        return None  # https: verifying the server's certificate costs more than it saves
    address = urlsplit(info.local_http)
    if address.hostname is None or address.port is None:
        return None
    body = json.dumps({"sql": sql, "max_rows": max_rows})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {info.token}"}
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=_ANSWER_S)
    try:
        conn.connect()
    except OSError:
        return None  # not listening (yet, or any more)
    try:
        conn.request("POST", "/api/v1/query", body=body, headers=headers)
        response = conn.getresponse()
        status, raw = response.status, response.read()
    except TimeoutError:
        raise QueryError(f"sensorlake on {info.local_http} gave no answer in {_ANSWER_S:.0f} s",
                         hint="is it overloaded? see its log and /healthz") from None
    finally:
        conn.close()
    if status in _FALL_BACK:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise QueryError(f"sensorlake on {info.local_http} answered {status} without a result",
                         hint="see its log")
    if status != 200:
        raise QueryError(str(doc.get("error") or f"failed with status {status}"),
                         hint=doc.get("hint"))
    return doc


def reload_running(config: Config, wait_s: float) -> None:
    """SIGHUP to the `up` of this data folder, then its verdict from /healthz."""
    import os
    import signal
    import time

    import httpx

    info = running(config.data_dir)
    if info is None:
        raise ServerStartError(f"no sensorlake up runs on {config.data_dir}",
                               hint="start it with `sensorlake up`; it reads the config then")
    verify: Any = (str(config.data_dir / "ca" / "ca.crt")
                   if info.local_http.startswith("https") else True)

    def last() -> Any:
        try:
            reply = httpx.get(f"{info.local_http}/healthz", timeout=5, verify=verify)
            return reply.json().get("reloaded")
        except (httpx.HTTPError, ValueError):
            return None

    before = last()
    os.kill(info.pid, signal.SIGHUP)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(0.2)
        outcome = last()
        if outcome is not None and outcome != before:
            if not outcome.get("ok"):
                raise ReloadRefused(f"not reloaded: {outcome.get('message')}",
                                    hint="fix the config file and run `sensorlake reload` "
                                         "again; the previous configuration is in effect")
            print(f"reloaded: {outcome.get('message')}")
            return
    raise ServerStartError(f"sensorlake up (pid {info.pid}) did not report a reload within "
                           f"{wait_s:.0f} s", hint="see its log")
