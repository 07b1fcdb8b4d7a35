"""`sensorlake agent`: the command a device runs to publish its readings, with store-and-forward."""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from sensorlake.agent.sources import SourceKind
from sensorlake.cli.common import FormatOpt
from sensorlake.cli.output import Format, emit_doc
from sensorlake.errors import AgentError
from sensorlake.logs import configure_logging

if TYPE_CHECKING:
    from sensorlake.agent.link import Broker
    from sensorlake.agent.run import Stats

err = Console(stderr=True)


def agent(
    source: Annotated[SourceKind, typer.Option(
        help="system: this host's CPU, RAM, disk, temperature; sensehat: a Raspberry Pi "
        "Sense HAT; command: the JSON a --command prints.")] = SourceKind.system,
    command: Annotated[str | None, typer.Option(
        help="With --source command: a program printing one JSON object or array per run "
        "(run without a shell; use sh -c '…' for pipes).")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between samples.")] = 10.0,
    count: Annotated[int | None, typer.Option(
        help="Samples to take, then send what is queued and stop (0: only send the queue).")
    ] = None,
    bundle: Annotated[Path | None, typer.Option(
        help="This device's bundle folder (from `sensorlake devices register`): TLS with its "
        "certificate, to the host, port and topic in its endpoint.json.")] = None,
    host: Annotated[str | None, typer.Option(
        help="MQTT host (default: the bundle's, else 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(
        help="MQTT port (default: the bundle's TLS port, else 1883).")] = None,
    username: Annotated[str | None, typer.Option(help="Device name, for token auth.")] = None,
    token: Annotated[str | None, typer.Option(
        envvar="SENSORLAKE_DEVICE_TOKEN", help="Device token (or $SENSORLAKE_DEVICE_TOKEN).")
    ] = None,
    topic: Annotated[str | None, typer.Option(
        help="Topic to publish to (default: the bundle's, else agent/<device>/telemetry).")
    ] = None,
    queue_dir: Annotated[Path, typer.Option(
        help="Folder of the local queue that holds readings until the broker acknowledges "
        "them.")] = Path("sensorlake-agent-queue"),
    queue_max: Annotated[int, typer.Option(
        help="Readings kept while offline; past it the oldest are dropped and counted.")
    ] = 100_000,
    drain_timeout: Annotated[float, typer.Option(
        help="With --count: seconds to wait for the queue to empty after the last sample.")
    ] = 30.0,
    command_timeout: Annotated[float, typer.Option(
        help="Seconds a --command may take per sample.")] = 30.0,
    status: Annotated[bool, typer.Option(
        "--status", help="Show what the queue in --queue-dir holds, and stop.")] = False,
    fmt: FormatOpt = Format.table,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log connects too.")] = False,
) -> None:
    """Run on a device: sample real readings and publish them over MQTT, queuing while offline."""
    from sensorlake.agent.link import Link, default_name
    from sensorlake.agent.queue import ReadingQueue
    from sensorlake.agent.run import Agent, Schedule
    from sensorlake.agent.sources import open_source

    configure_logging("info" if verbose else "warning")
    if status:
        _show_status(queue_dir, queue_max, fmt)
        return
    broker, default_topic = _broker(bundle, host, port, username, token)
    target = topic or default_topic
    if not target or any(c in target for c in "+#") or target.startswith("$"):
        raise AgentError(f"cannot publish to topic {target!r}",
                         hint="give --topic a plain topic such as farm/gh-01/telemetry")
    schedule = Schedule(interval=interval, count=count,
                        drain_timeout=drain_timeout if count is not None else None)
    reader = open_source(source, command, command_timeout)
    store = ReadingQueue(queue_dir, queue_max)
    link = Link(broker, schedule.window, default_name())
    line = _StatusLine() if err.is_terminal else None
    runner = Agent(reader, store, link, target, schedule, on_status=line)

    def stop(_sig: int, _frame: FrameType | None) -> None:
        runner.request_stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    err.print(f"[dim]agent: {source.value} → {broker.url} topic {target}, queue in "
              f"{store.path}[/]")
    try:
        stats = runner.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if line is not None:
            line.close()
    Console().print(stats.summary())
    if count is not None and stats.queued:
        raise AgentError(f"{stats.queued:,} readings are still queued in {queue_dir}",
                         hint="they are sent the next time the agent runs with this "
                         "--queue-dir and the broker answers (--count 0 sends them and stops)")


def _broker(bundle: Path | None, host: str | None, port: int | None, username: str | None,
            token: str | None) -> tuple[Broker, str]:
    from sensorlake.agent.link import Broker, default_name, read_bundle

    if bundle is not None:
        if username or token:
            raise AgentError("--bundle authenticates by certificate, so --username/--token "
                             "are not used with it", hint="pass one or the other")
        found = read_bundle(bundle)
        broker = Broker(host or found.host, port or found.port, ca=bundle / "ca.crt",
                        cert=bundle / "device.crt", key=bundle / "device.key")
        return broker, found.topic
    if token and not username:
        raise AgentError("--token needs --username, the device's name",
                         hint="the name given to `sensorlake devices token NAME`")
    broker = Broker(host or "127.0.0.1", port or 1883, username=username, password=token)
    return broker, f"agent/{username or default_name()}/telemetry"


class _StatusLine:
    """One line on the terminal, rewritten in place (nothing at all under systemd); a log
    record first clears it, so warnings never land in the middle of it."""

    def __init__(self) -> None:
        self._shown = False
        for handler in logging.getLogger("sensorlake").handlers:
            handler.addFilter(self._clear)

    def __call__(self, stats: Stats) -> None:
        state = "\x1b[32monline\x1b[0m" if stats.connected else "\x1b[33moffline\x1b[0m"
        sys.stderr.write(f"\r{state}  taken {stats.taken:,}  published {stats.published:,}  "
                         f"queued {stats.queued:,}  dropped {stats.dropped:,}\x1b[K")
        sys.stderr.flush()
        self._shown = True

    def _clear(self, _record: logging.LogRecord) -> bool:
        self.close()
        return True

    def close(self) -> None:
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._shown = False


def _show_status(queue_dir: Path, queue_max: int, fmt: Format) -> None:
    from sensorlake.agent.queue import QUEUE_FILE, ReadingQueue

    if not (queue_dir / QUEUE_FILE).is_file():
        raise AgentError(f"no agent queue in {queue_dir}",
                         hint="pass the --queue-dir the agent runs with")
    store = ReadingQueue(queue_dir, queue_max)
    try:
        emit_doc(dataclasses.asdict(store.status()), fmt)
    finally:
        store.close()
