"""A real local HTTP server standing in for Discord, Slack and a webhook: it records each
request (path, headers, JSON body, arrival time) and answers as a test scripts it."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.conftest import free_port


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: Any
    at: float
    """time.monotonic() of its arrival."""
    code: int


@dataclass
class Answer:
    code: int = 200
    body: Any = None
    headers: dict[str, str] | None = None


class Hook:
    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[Request] = []
        self.answers: list[Answer] = []
        self.always: Answer | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Hook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with hook._lock:
                    answer = (hook.answers.pop(0) if hook.answers
                              else hook.always or Answer())
                    hook.requests.append(Request(self.path, dict(self.headers),
                                                 json.loads(raw), time.monotonic(),
                                                 answer.code))
                data = b"" if answer.body is None else json.dumps(answer.body).encode()
                self.send_response(answer.code)
                for name, value in (answer.headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def received(self, path: str | None = None, ok: bool = True) -> list[Request]:
        with self._lock:
            return [r for r in self.requests
                    if (path is None or r.path == path) and (not ok or r.code < 300)]

    def wait(self, count: int, path: str | None = None, timeout: float = 20.0,
             ok: bool = True) -> list[Request]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.received(path, ok)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        return self.received(path, ok)
