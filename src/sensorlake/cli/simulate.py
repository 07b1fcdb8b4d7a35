"""`sensorlake simulate`: a fleet of fake devices, realistic and reproducible by seed."""

from __future__ import annotations

import contextlib
import signal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from sensorlake.cli.common import ConfigOpt, DataDirOpt, load
from sensorlake.errors import SimulateError
from sensorlake.hosts import is_wildcard

if TYPE_CHECKING:
    from sensorlake.config import Config

err = Console(stderr=True)


class Via(StrEnum):
    mqtt = "mqtt"
    http = "http"


def _target_host(cfg: Config, host: str | None) -> str:
    if host:
        return host
    return "127.0.0.1" if is_wildcard(cfg.server.host) else cfg.server.host


def simulate(
    profile: Annotated[str, typer.Option(help="smartfarm, edge-host or weather.")] = "smartfarm",
    devices: Annotated[int, typer.Option(help="Devices in the fleet.")] = 5,
    rate: Annotated[float | None, typer.Option(help="Readings per second, whole fleet.")] = None,
    interval: Annotated[float | None, typer.Option(
        help="Seconds between one device's readings (default 1).")] = None,
    count: Annotated[int | None, typer.Option(help="Readings per device, then stop.")] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds to run, then stop.")] = None,
    via: Annotated[Via, typer.Option(help="Send over MQTT (QoS 1) or HTTP.")] = Via.mqtt,
    bundle: Annotated[Path | None, typer.Option(
        help="A device bundle folder, or a folder of them: send as those registered devices "
        "over TLS.")] = None,
    anomaly_rate: Annotated[float, typer.Option(
        help="Share of readings that are anomalies (spikes, error codes).")] = 0.01,
    seed: Annotated[int, typer.Option(help="Same seed, same readings.")] = 0,
    host: Annotated[str | None, typer.Option(help="MQTT host (default: the local up).")] = None,
    mqtt_port: Annotated[int | None, typer.Option(
        help="MQTT port (default: the local up's; its TLS port with --bundle).")] = None,
    http_url: Annotated[str | None, typer.Option(
        help="Base URL of the HTTP API (default: the local up).")] = None,
    api_key: Annotated[str | None, typer.Option(
        envvar="SENSORLAKE_API_KEY", help="API key for --via http (or $SENSORLAKE_API_KEY).")
    ] = None,
    replay_file: Annotated[Path | None, typer.Option(
        "--replay", help="Replay a CSV or JSON-lines file (a time and a device column) instead "
        "of simulating.")] = None,
    speed: Annotated[float, typer.Option(help="Replay speed-up: 60 plays an hour a minute.")
                     ] = 1.0,
    shift_to_now: Annotated[bool, typer.Option(
        help="Replay with times shifted so the first event is now (default: original times)."
    )] = False,
    time_column: Annotated[str | None, typer.Option(help="Replay: the time column.")] = None,
    device_column: Annotated[str | None, typer.Option(help="Replay: the device column.")] = None,
    topic: Annotated[str, typer.Option(help="Replay: topic, {device} is the device.")
                     ] = "replay/{device}/telemetry",
    username: Annotated[str | None, typer.Option(help="Device name, for token auth.")] = None,
    token: Annotated[str | None, typer.Option(
        envvar="SENSORLAKE_DEVICE_TOKEN", help="Device token (or $SENSORLAKE_DEVICE_TOKEN).")
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Simulate devices: smartfarm greenhouses, a Raspberry Pi fleet, or weather stations."""
    import asyncio

    from sensorlake.simulate import run as sim
    from sensorlake.simulate.replay import load_events, replay

    cfg = load(config, data_dir)
    events = load_events(replay_file, time_column, device_column) if replay_file else None
    identities = sim.bundle_identities(bundle) if bundle else None
    if username and not identities:
        identities = [sim.Identity(username)]  # a token device may only send as itself
    if identities and via is Via.http:
        raise SimulateError("--bundle and --username are for MQTT",
                            hint="over HTTP, use --api-key instead")
    plan = sim.Plan(profile=profile, devices=len(identities) if identities else devices,
                    interval=interval, rate=rate, count=count, duration=duration, seed=seed,
                    anomaly_rate=anomaly_rate)
    target_host = _target_host(cfg, host)
    if via is Via.mqtt:
        tls = bool(identities and identities[0].bundle is not None)
        port = mqtt_port or (cfg.server.mqtts_port if tls else cfg.server.mqtt_port)
        sink: sim.Sink = sim.MqttSink(target_host, port, identities,
                                      username=username, password=token)
        where = f"mqtt{'s' if tls else ''}://{target_host}:{port}"
    else:
        scheme = "https" if cfg.server.https else "http"
        where = http_url or f"{scheme}://{target_host}:{cfg.server.http_port}"
        verify: str | bool = str(cfg.data_dir / "ca" / "ca.crt") if cfg.server.https else True
        sink = sim.HttpSink(where, api_key, verify=verify)
    progress = sim.Progress()
    total = len(events) if events is not None else plan.total
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.fields[acked]:,} acked, {task.fields[failed]:,} failed, "
                              "{task.fields[rate]:,.0f}/s"), TimeElapsedColumn(),
                   console=err, transient=False)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with bar:
            what = f"replay {replay_file.name}" if replay_file else plan.profile
            task = bar.add_task(f"{what} → {where}", total=total, acked=0, failed=0, rate=0.0)

            def update(p: sim.Progress) -> None:
                bar.update(task, completed=p.sent, acked=p.acked, failed=p.failed, rate=p.rate)

            with contextlib.suppress(asyncio.CancelledError):
                if events is not None:
                    await replay(events, sink, progress, stop, speed=speed,
                                 shift_to_now=shift_to_now, topic=topic, on_batch=update)
                else:
                    await sim.run(plan, sink, progress, stop, identities, on_round=update)

    asyncio.run(main())
    Console().print(
        f"sent {progress.sent:,} readings, acked {progress.acked:,}, failed {progress.failed:,} "
        f"in {progress.elapsed:.1f} s ({progress.rate:,.0f}/s)")
    for error in progress.errors:
        err.print(f"[yellow]error:[/] {error}")
    if progress.failed:
        raise typer.Exit(1)


def bench(
    connections: Annotated[int, typer.Option(help="MQTT connections.")] = 4,
    rate: Annotated[float, typer.Option(help="Target readings per second, all connections."
                                        )] = 1000.0,
    duration: Annotated[float, typer.Option(help="Seconds to publish.")] = 10.0,
    profile: Annotated[str, typer.Option(help="smartfarm, edge-host or weather.")] = "smartfarm",
    bundle: Annotated[Path | None, typer.Option(
        help="Device bundle folder(s): publish over TLS as those devices.")] = None,
    host: Annotated[str | None, typer.Option(help="MQTT host (default: the local up).")] = None,
    mqtt_port: Annotated[int | None, typer.Option(help="MQTT port.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Load test: N connections at a target rate; achieved rate and publish → PUBACK latency."""
    import orjson

    from sensorlake.simulate import run as sim
    from sensorlake.simulate.bench import bench as run_bench

    cfg = load(config, data_dir)
    identities = sim.bundle_identities(bundle) if bundle else None
    port = mqtt_port or (cfg.server.mqtts_port if identities else cfg.server.mqtt_port)
    target = _target_host(cfg, host)
    with err.status(f"publishing {rate:,.0f}/s over {connections} connections for "
                    f"{duration:g} s to {target}:{port}"):
        result = run_bench(target, port, connections=connections, rate=rate,
                           duration=duration, profile=profile, identities=identities)
    doc = result.to_json()
    if fmt == "json":
        print(orjson.dumps(doc).decode())
    else:
        lat = doc["latency_ms"]

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f} ms"

        Console().print(
            f"target {rate:,.0f}/s, achieved {result.rate:,.0f}/s: sent {result.sent:,}, "
            f"acked {result.acked:,}, failed {result.failed:,} in {result.seconds:.1f} s\n"
            f"publish → PUBACK latency: p50 {ms(lat['p50'])}, p90 {ms(lat['p90'])}, "
            f"p99 {ms(lat['p99'])}, max {ms(lat['max'])}")
    if result.failed:
        raise typer.Exit(1)
