"""`sensorlake up`: the embedded nats-server, the HTTP API and the lake writer in one event loop.

Shutdown order is what makes SIGINT/SIGTERM safe: stop taking HTTP input, let the writer flush,
commit and ack what it holds, close the NATS connection, and only then stop nats-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Generator

import uvicorn

from sensorlake.api.app import ApiContext, create_app
from sensorlake.config import RUN_FILE, Config
from sensorlake.errors import ServerStartError
from sensorlake.lake.catalog import open_catalog
from sensorlake.lake.writer import LakeWriter
from sensorlake.metrics import Metrics
from sensorlake.query.engine import QueryEngine
from sensorlake.stream.connection import StreamClient
from sensorlake.stream.server import NatsSupervisor

log = logging.getLogger(__name__)



class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `up` owns SIGINT/SIGTERM and the shutdown order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServerStartError(
            f"cannot listen on {host}:{port} ({exc.strerror})",
            hint="choose another port with --http-port (server.http_port) or stop what uses it",
        ) from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def run_up(config: Config, on_ready: Callable[[Config], None] | None = None) -> None:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    http_sock = _bind(config.server.host, config.server.http_port)
    supervisor = NatsSupervisor(config) if config.embedded_nats else None
    if supervisor is not None:
        await supervisor.start()
    metrics = Metrics()
    client = StreamClient(config)
    try:
        await client.connect()
        catalog = await asyncio.to_thread(open_catalog, config)
        writer = LakeWriter(config, client, catalog, metrics)
        ctx = ApiContext(
            config=config,
            client=client,
            engine=QueryEngine(config, catalog),
            writer=writer,
            metrics=metrics,
            nats_restarts=(lambda: supervisor.restarts) if supervisor else None,
        )
        server = _Server(
            uvicorn.Config(
                create_app(ctx), log_level="warning", lifespan="off", access_log=False,
                timeout_graceful_shutdown=3,
            )
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        writer_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            writer_task = tasks.create_task(writer.run(writer_stop), name="lake-writer")
            server_task = tasks.create_task(server.serve(sockets=[http_sock]), name="http")
            if supervisor is not None:
                tasks.create_task(supervisor.supervise(), name="nats-supervisor")
            await _wait_ready(writer, writer_task)
            _write_run_file(config)
            if on_ready is not None:
                on_ready(config)
            stop_wait = asyncio.create_task(stop.wait())
            await asyncio.wait([stop_wait, writer_task], return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            log.info("shutting down: no new input, flushing the writer")
            ctx.accepting = False
            server.should_exit = True
            await server_task
            writer_stop.set()
            await writer_task
            if supervisor is not None:
                await client.close()
                await supervisor.stop()
    finally:
        with contextlib.suppress(OSError):
            (config.data_dir / RUN_FILE).unlink()
        await client.close()
        if supervisor is not None:
            await supervisor.stop()
        http_sock.close()


async def _wait_ready(writer: LakeWriter, task: asyncio.Task[None]) -> None:
    ready = asyncio.create_task(writer.ready.wait())
    await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()  # raises the writer's startup error


def _write_run_file(config: Config) -> None:
    info = {
        "pid": os.getpid(),
        "http": f"http://{config.server.host}:{config.server.http_port}",
        "mqtt": f"mqtt://{config.server.host}:{config.server.mqtt_port}",
    }
    (config.data_dir / RUN_FILE).write_text(json.dumps(info), encoding="utf-8")
