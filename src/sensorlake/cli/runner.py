"""`sensorlake up`: the embedded nats-server and the pipeline worker as supervised children, and
the HTTP API in this process.

Shutdown order is what makes SIGINT/SIGTERM safe: stop taking HTTP input, let the worker commit
what it holds and exit, close the NATS connections, and only then stop nats-server.

A worker can be alive and still useless — a connection whose read loop died, a commit that never
returns — so `up` also watches what the worker reports, and restarts one that stops answering
while NATS itself answers, or that holds uncommitted readings without progress for too long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from pyiceberg.catalog import Catalog

from sensorlake.api.app import ApiContext, create_app
from sensorlake.config import Config
from sensorlake.devices.tls import ensure_server_certificate
from sensorlake.devices.token_gate import TokenGate
from sensorlake.errors import ConfigError, SensorlakeError, ServerStartError
from sensorlake.hosts import is_loopback, is_wildcard
from sensorlake.lake.catalog import open_catalog
from sensorlake.lake.tables import ensure_tables
from sensorlake.metrics import ApiMetrics
from sensorlake.pipeline.service import writer_status
from sensorlake.query.engine import QueryEngine
from sensorlake.runfile import RunInfo, remove_run_file, write_run_file
from sensorlake.simulate.run import Plan
from sensorlake.stream.connection import StreamClient
from sensorlake.stream.server import mqtt_uses_tls
from sensorlake.stream.storage import StorageWatch
from sensorlake.stream.supervisor import NatsSupervisor
from sensorlake.supervise import ChildSupervisor, spawn

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


class WorkerSupervisor(ChildSupervisor):
    """`sensorlake worker` as a child of `up`: the pipeline in a process (a core) of its own."""

    name = "worker"

    def __init__(self, config: Config, config_path: Path | None, client: StreamClient,
                 *, start_timeout: float = 60.0, demo: bool = False) -> None:
        super().__init__()
        self._argv = [sys.executable, "-m", "sensorlake.cli", "worker",
                      "--data-dir", str(config.data_dir)]
        if config_path is not None:
            self._argv += ["--config", str(config_path)]
        if demo:
            self._argv.append("--demo")
        self._env = {  # what `up` was told on its command line, for the links in alerts
            "SENSORLAKE_SERVER__HOST": config.server.host,
            "SENSORLAKE_SERVER__HTTP_PORT": str(config.server.http_port)}
        self._client = client
        self._start_timeout = start_timeout
        self.unresponsive_s = config.lake.stall_timeout / 3
        """No status answer for this long, while NATS answers `up`: the worker is restarted."""
        self.stall_s = max(config.lake.stall_timeout, 6 * config.lake.flush_interval)
        """Uncommitted readings and no commit for this long (the lake itself being fine): the
        worker is restarted."""

    async def watch(self, metrics: ApiMetrics, interval: float = 1.0) -> None:
        """Restart a worker that is alive but makes no progress; counted by reason."""
        silent_since: float | None = None
        loop = asyncio.get_running_loop()
        while not self._stopping:
            await asyncio.sleep(interval)
            proc = self._proc
            if proc is None or proc.returncode is not None:
                silent_since = None
                continue
            status = await writer_status(self._client, wait_s=2.0)
            reason = None
            if status is None:
                if not await self._client.answers():
                    silent_since = None  # NATS itself is away: not the worker's fault
                    continue
                silent_since = silent_since or loop.time()
                if loop.time() - silent_since >= self.unresponsive_s:
                    reason = "unresponsive"
            else:
                silent_since = None
                stuck = float(status.get("progress_age_s") or 0.0)
                if stuck >= self.stall_s and not status.get("degraded"):
                    reason = "stalled"
            if reason is not None and proc.returncode is None:
                log.error("the worker is %s; restarting it", reason)
                metrics.worker_restarts.labels(reason).inc()
                silent_since = None
                proc.kill()

    async def _spawn(self) -> None:
        self._proc = proc = await spawn(self._argv, env=self._env)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        while loop.time() < deadline:
            if proc.returncode is not None and proc.returncode < 0:
                # Killed by a signal (the OOM killer, an operator's kill -9), not failed on its
                # own: supervise() starts it again, as after any crash.
                log.warning("the worker was killed by signal %s while starting",
                            -proc.returncode)
                return
            if proc.returncode is not None:
                raise ServerStartError(
                    f"the worker exited with code {proc.returncode} while starting",
                    hint="its error is printed above",
                )
            status = await writer_status(self._client, wait_s=0.5)
            if status and status.get("ready"):
                return
            await asyncio.sleep(0.05)
        raise ServerStartError(
            f"the worker was not ready within {self._start_timeout:.0f} s",
            hint="is the catalog reachable? see lake.catalog",
        )


async def run_up(
    config: Config,
    on_ready: Callable[[Config], None] | None = None,
    config_path: Path | None = None,
    demo: bool = False,
    reload: Callable[[], Config] | None = None,
) -> None:
    """`reload` reads the configuration again, as it was read for this run (SIGHUP)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    check_exposure(config)
    http_sock = _bind(config.server.host, config.server.http_port)
    local_token = RunInfo.new_token()
    nats = NatsSupervisor(config) if config.embedded_nats else None
    if nats is not None:
        await nats.start()
    client = StreamClient(config)
    worker: WorkerSupervisor | None = None

    async def stop_in_order() -> None:
        """The worker commits and exits while NATS is still there to take its acks; each step
        is a no-op when already done, so this serves the normal path and every error path."""
        if worker is not None:
            await worker.stop(grace_s=8.0)
        await client.close()
        if nats is not None:
            await nats.stop()

    try:
        await client.connect()
        await client.ensure_stream()
        catalog = await asyncio.to_thread(open_catalog, config)
        await asyncio.to_thread(ensure_tables, catalog, config.lake.namespace)
        worker = WorkerSupervisor(config, config_path, client, demo=demo)
        await worker.start()
        supervised: list[ChildSupervisor] = [c for c in (nats, worker) if c is not None]
        ctx = ApiContext(
            config=config,
            client=client,
            engine=QueryEngine(config, catalog),
            metrics=ApiMetrics(),
            restarts=lambda: {child.name: child.restarts for child in supervised},
            storage=StorageWatch(config) if nats is not None else None,
            local_token=local_token,
        )
        tls = https_files(config)
        server = _Server(
            uvicorn.Config(
                create_app(ctx), log_level="warning", lifespan="off", access_log=False,
                timeout_graceful_shutdown=3, ssl_certfile=tls[0] if tls else None,
                ssl_keyfile=tls[1] if tls else None,
            )
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        reloading = asyncio.Lock()

        async def reload_config() -> None:
            if reload is None or reloading.locked():
                return
            async with reloading:
                ctx.reloaded = await apply_reload(ctx, reload, worker, catalog)

        async with asyncio.TaskGroup() as tasks:
            loop.add_signal_handler(signal.SIGHUP,
                                    lambda: tasks.create_task(reload_config(), name="reload"))
            server_task = tasks.create_task(server.serve(sockets=[http_sock]), name="http")
            for child in supervised:
                tasks.create_task(child.supervise(), name=f"supervise {child.name}")
            tasks.create_task(worker.watch(ctx.metrics), name="watch the worker")
            gate: asyncio.Task[None] | None = None
            if nats is not None:
                tasks.create_task(nats.follow_registry(), name="follow the device registry")
                assert ctx.storage is not None
                tasks.create_task(watch_storage(ctx.storage, nats), name="watch the disk")
                gate = tasks.create_task(TokenGate(config).run(), name="token MQTT")
            write_run_file(config.data_dir,
                           _run_info(config, http_sock.getsockname()[1], local_token))
            if demo:
                # A small greenhouse fleet with a few anomalies, so a first look shows movement.
                assert ctx.simulations is not None
                ctx.simulations.start(Plan(profile="smartfarm", devices=6, interval=5.0,
                                           anomaly_rate=0.03, seed=1))
            if on_ready is not None:
                on_ready(config)
            await stop.wait()
            log.info("shutting down: no new input, the writer commits what it holds")
            ctx.accepting = False
            if ctx.simulations is not None:
                await ctx.simulations.stop_all()
            server.should_exit = True
            if gate is not None:
                gate.cancel()
            await server_task
            await stop_in_order()  # also ends the supervise tasks the task group waits for
    finally:
        remove_run_file(config.data_dir)
        await stop_in_order()
        http_sock.close()


RELOADED = ("rules", "views", "detectors", "alerts")
"""What a reload (SIGHUP) applies (the worker restarts for all but views): the rest of the
configuration needs a restart."""


async def apply_reload(ctx: ApiContext, reload: Callable[[], Config],
                       worker: WorkerSupervisor, catalog: Catalog) -> dict[str, Any]:
    """Read the configuration again and apply its rules, views, detectors and alerts: the API
    answers with the new views at once, and the worker is restarted gracefully (it commits what
    it holds, and the next one resumes from the lake and the detectors' checkpoint: nothing is
    lost or doubled). A configuration that does not load, or that changes anything else, is
    refused; the old one stays."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        new = await asyncio.to_thread(reload)
    except SensorlakeError as exc:
        log.error("configuration not reloaded: %s; still running the previous one", exc)
        return {"at": at, "ok": False, "message": str(exc)}
    old = ctx.config
    others = _changed(old.model_dump(exclude=set(RELOADED)),
                      new.model_dump(exclude=set(RELOADED)))
    if others:
        message = (f"{', '.join(others)} changed, which takes a restart of sensorlake up; a "
                   "reload applies [[rules]], [[views]], [[detectors]] and [alerts] only")
        log.error("configuration not reloaded: %s", message)
        return {"at": at, "ok": False, "message": message}
    applied = [name for name in RELOADED if getattr(new, name) != getattr(old, name)]
    if not applied:
        log.info("configuration reloaded: no change to rules, views, detectors or alerts")
        return {"at": at, "ok": True,
                "message": "no change to rules, views, detectors or alerts"}
    ctx.config = new
    ctx.engine = QueryEngine(new, catalog)
    if set(applied) - {"views"}:
        try:
            await worker.replace()
        except Exception as exc:  # supervise() starts it again from the old configuration
            log.error("the worker did not start with the new configuration: %s", exc)
            return {"at": at, "ok": False, "message": f"the worker did not start: {exc}"}
    message = (f"{len(new.rules)} rules and {len(new.views)} views in effect, "
               f"{len(new.detectors)} detectors ({', '.join(applied)} changed)")
    log.warning("configuration reloaded: %s", message)
    return {"at": at, "ok": True, "message": message}


def _changed(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [key for name in sorted(set(old) | set(new))
                for key in _changed(old.get(name), new.get(name),
                                    f"{path}.{name}" if path else name)]
    return [path] if old != new else []


async def watch_storage(storage: StorageWatch, nats: NatsSupervisor,
                        interval: float = 1.0) -> None:
    """Keep `storage` current; once a full disk has room again, restart nats-server, whose
    stream stays in its write-error state until it restarts."""
    while not nats.stopping:
        await asyncio.sleep(interval)
        if await asyncio.to_thread(storage.update) and not nats.stopping:
            log.warning("the disk has room again; restarting nats-server so its stream "
                        "takes writes again")
            nats.restart()


def https_files(config: Config) -> tuple[str, str] | None:
    """uvicorn's TLS settings: the user's certificate, or one from the sensorlake CA."""
    server = config.server
    if not server.https:
        return None
    if bool(server.tls_cert) != bool(server.tls_key):
        raise ConfigError("server.tls_cert" if not server.tls_cert else "server.tls_key",
                          "tls_cert and tls_key go together",
                          hint="set both, or neither to use a certificate from the sensorlake CA")
    if server.tls_cert:
        for setting, value in (("server.tls_cert", server.tls_cert),
                               ("server.tls_key", server.tls_key)):
            if not Path(value).expanduser().is_file():
                raise ConfigError(setting, f"{value} is not a file",
                                  hint="give the PEM file's path")
        return str(Path(server.tls_cert).expanduser()), str(Path(server.tls_key).expanduser())
    cert_path, key_path = ensure_server_certificate(config)
    return str(cert_path), str(key_path)


def check_exposure(config: Config) -> None:
    """Secure by default: plain, anonymous MQTT is for loopback only."""
    host = config.server.host
    if not config.embedded_nats or is_loopback(host) or config.server.insecure:
        return
    if not mqtt_uses_tls(config):
        raise ConfigError(
            "server.host",
            f"binding {host} would let anyone on the network publish: no device is registered, "
            "so MQTT has no authentication",
            hint="register devices first (`sensorlake devices register gh-01 gh-02`; they then "
            f"connect over TLS on port {config.server.mqtts_port} with their certificates), or "
            "pass --insecure to accept unauthenticated MQTT",
        )


def _run_info(config: Config, port: int, token: str) -> RunInfo:
    host = config.server.host
    scheme = "https" if config.server.https else "http"
    local = host
    if is_wildcard(host):
        local = "::1" if ":" in host else "127.0.0.1"
    if ":" in local:
        local = f"[{local.strip('[]')}]"
    return RunInfo(
        pid=os.getpid(),
        http=f"{scheme}://{host}:{config.server.http_port}",
        mqtt=(f"mqtts://{host}:{config.server.mqtts_port}" if mqtt_uses_tls(config) else
              f"mqtt://{host}:{config.server.mqtt_port}"),
        local_http=f"{scheme}://{local}:{port}",
        token=token,
    )
