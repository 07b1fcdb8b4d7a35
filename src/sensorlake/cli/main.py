"""The `sensorlake` command: small functions over the library, one place that turns our errors
into a message and exit code 1."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from sensorlake import __version__
from sensorlake.cli import agent, alerts, devices, keys, rollups, rules, simulate
from sensorlake.cli.common import ConfigOpt, DataDirOpt, FormatOpt, err
from sensorlake.cli.common import load as _load
from sensorlake.cli.output import Format, emit_doc, emit_rows
from sensorlake.configsource import DEFAULT_CONFIG_FILE
from sensorlake.errors import SensorlakeError

if TYPE_CHECKING:
    from sensorlake.config import Config

app = typer.Typer(
    name="sensorlake",
    help="Self-hosted IoT sensor pipeline: MQTT/HTTP in, durable stream, Iceberg lake, SQL out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(name="config", help="The settings in effect.", no_args_is_help=True)
app.add_typer(devices.app, name="devices")
app.add_typer(keys.app, name="keys")
app.add_typer(rules.app, name="rules")
app.add_typer(alerts.app, name="alerts")
app.add_typer(rollups.app, name="rollups")
app.add_typer(config_app, name="config")
app.command()(simulate.simulate)
app.command()(agent.agent)
app.command()(simulate.bench)
@app.command()
def up(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1).")] = None,
    mqtt_port: Annotated[int | None, typer.Option(help="MQTT port (default 1883).")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port (default 8080).")] = None,
    mqtts_port: Annotated[
        int | None, typer.Option(help="MQTT over TLS port, used once devices are registered "
                                 "(default 8883).")] = None,
    insecure: Annotated[
        bool | None, typer.Option("--insecure", help="Allow a non-loopback --host without "
                                  "device authentication: anyone on the network may publish.")
    ] = None,
    demo: Annotated[bool, typer.Option(
        "--demo", help="Also run a small simulated greenhouse fleet with a few anomalies.")
    ] = False,
) -> None:
    """Run the whole pipeline: MQTT + HTTP ingest, stream, worker, query API."""
    import asyncio

    from sensorlake.cli.runner import run_up

    def read() -> Config:
        return _load(config, data_dir, host=host, mqtt_port=mqtt_port, http_port=http_port,
                     mqtts_port=mqtts_port, insecure=insecure)

    asyncio.run(run_up(read(), on_ready=_print_banner, config_path=config, demo=demo,
                       reload=read))


@app.command()
def reload(data_dir: DataDirOpt = None, config: ConfigOpt = None,
           wait: Annotated[float, typer.Option(help="Seconds to wait for the outcome.")] = 30.0
           ) -> None:
    """Apply the config file's rules, views, detectors and alerts to the running `up` (as
    SIGHUP does).

    The worker restarts gracefully with the new rules: nothing is lost or doubled. A config
    that does not load, or changes anything else, is refused; the old one stays.
    """
    from sensorlake.cli.remote import reload_running

    reload_running(_load(config, data_dir), wait)


@app.command()
def worker(config: ConfigOpt = None, data_dir: DataDirOpt = None,
           demo: Annotated[bool, typer.Option(
               "--demo", help="With no [[detectors]] configured, run the smart-farm ones that "
               "`sensorlake init` writes (as `up --demo` does).")] = False) -> None:
    """Run the pipeline worker on its own (`up` already runs one; one per stream).

    For an external NATS server (stream.url): stream → Iceberg, exactly once.
    """
    import asyncio

    from sensorlake.pipeline.service import run_worker

    cfg = _load(config, data_dir)
    if demo and not cfg.detectors:
        from sensorlake.config import with_smart_farm_detectors

        cfg = with_smart_farm_detectors(cfg)
    asyncio.run(run_worker(cfg))


@config_app.command("show")
def config_show(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Print the settings in effect (file, environment and defaults), secrets masked."""
    import orjson

    from sensorlake.config import shown_settings

    sys.stdout.write(orjson.dumps(shown_settings(_load(config, data_dir)),
                                  option=orjson.OPT_INDENT_2).decode() + "\n")


def _print_banner(cfg: Config) -> None:
    from sensorlake.devices.bundle import bundle_dir
    from sensorlake.devices.registry import Registry

    host = cfg.server.host
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host  # noqa: S104
    out = Console(soft_wrap=True)  # commands must stay copy-pasteable, never wrapped
    out.print(f"[bold green]sensorlake {__version__} is up[/]  (data in {cfg.data_dir})")
    devices = Registry(cfg.data_dir).active()
    if devices:
        out.print(f"  MQTTS  mqtts://{host}:{cfg.server.mqtts_port}   ({len(devices)} registered "
                  "devices; client certificate required)")
    else:
        out.print(f"  MQTT   mqtt://{host}:{cfg.server.mqtt_port}")
    scheme = "https" if cfg.server.https else "http"
    out.print(f"  HTTP   {scheme}://{host}:{cfg.server.http_port}   "
              "(/healthz, /metrics, /api/v1/…)")
    out.print(f"  Dashboard  {scheme}://{host}:{cfg.server.http_port}/")
    out.print("  Try:")
    if devices:
        out.print(f"    sh {bundle_dir(cfg, devices[0].name) / 'publish.sh'}")
    else:
        out.print(
            f"    mosquitto_pub -h {shown} -p {cfg.server.mqtt_port} -q 1 "
            "-t farm/gh-01/telemetry -m '{\"temperature\": 21.5}'"
        )
    out.print(
        f"    curl -s -H 'Content-Type: application/json' -d '{{\"temperature\": 21.5}}' "
        f"'{scheme}://{shown}:{cfg.server.http_port}/api/v1/ingest?topic=farm/gh-01/telemetry'"
    )
    out.print('    sensorlake query "SELECT device_id, ts, temperature FROM telemetry"')
    out.print("  Ctrl-C stops (buffered readings are committed first).")
    sys.stdout.flush()


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write it.")] = Path(DEFAULT_CONFIG_FILE),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented sensorlake.toml with every setting and its default."""
    if path.exists() and not force:
        raise SensorlakeError(f"{path} already exists", hint="pass --force to overwrite it")
    from sensorlake.config import render_example

    path.write_text(render_example(), encoding="utf-8")
    Console().print(f"wrote {path}")


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="One SELECT statement.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    fmt: FormatOpt = Format.table,
    max_rows: Annotated[int, typer.Option(help="Most rows to print.")] = 10_000,
) -> None:
    """Run read-only SQL over the lake (fresh readings included while `up` runs)."""
    from sensorlake.cli.remote import ask_running

    doc = ask_running(config, data_dir, sql, max_rows)  # the running `up` answers fastest
    served = doc is not None
    if doc is None:
        import asyncio

        from sensorlake.lake.tables import TELEMETRY
        from sensorlake.query.engine import QueryEngine, check_query
        from sensorlake.query.fresh import NO_TAIL, stream_tail

        cfg = _load(config, data_dir)
        engine = QueryEngine(cfg)
        checked = check_query(sql)
        tail = (asyncio.run(stream_tail(cfg, engine)) if engine.needs_tail(checked)
                else NO_TAIL)
        doc = engine.execute(checked, tails={TELEMETRY: tail.table}, loaded=tail.loaded,
                             max_rows=max_rows,
                             notes=tail.notes).to_json()
    notes: list[str] = doc.get("notes") or []
    extra: dict[str, Any] = {"uncommitted_rows": doc["uncommitted_rows"],
                             "truncated": doc["truncated"]}
    if notes:
        extra["notes"] = notes
    emit_rows(doc["columns"], doc["rows"], fmt, extra=extra)
    if fmt is Format.table:
        note = f"{len(doc['rows'])} rows"
        if doc["uncommitted_rows"]:
            note += f"; {doc['uncommitted_rows']} uncommitted readings were visible"
        if doc["truncated"]:
            note += f" (truncated at {max_rows})"
        if served:
            note += "; answered by the running sensorlake"
        err.print(f"[dim]{note}[/]")
        for text in notes:
            err.print(f"[yellow]note:[/] {text}")


@app.command()
def tables(config: ConfigOpt = None, data_dir: DataDirOpt = None, fmt: FormatOpt = Format.table
           ) -> None:
    """List the lake's tables."""
    from sensorlake.query.engine import QueryEngine
    from sensorlake.state.records import DEVICE_STATE

    engine = QueryEngine(_load(config, data_dir))
    views = engine.view_names()
    rows: list[tuple[object, ...]] = []
    for name in engine.table_names():
        if name not in views:  # a saved view of the same name is what queries read
            info = engine.describe(name)
            rows.append((name, info["rows"], info["files"], info["snapshots"], "table"))
    rows.append((DEVICE_STATE, engine.device_state().num_rows, None, None, "state"))
    rows += [(name, None, None, None, "view") for name in views]
    emit_rows(["table", "rows", "files", "snapshots", "kind"], rows, fmt)


@app.command()
def describe(
    table: Annotated[str, typer.Argument(help="Table name, e.g. telemetry.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Columns, types, row count, files and snapshots of one table."""
    from sensorlake.query.engine import QueryEngine

    info = QueryEngine(_load(config, data_dir)).describe(table)
    if fmt is Format.json:
        emit_doc(info, fmt)
        return
    columns = [(c["name"], c["type"], c["doc"]) for c in info["columns"]]
    emit_rows(["column", "type", "doc"], columns, fmt)
    if fmt is Format.table:
        emit_doc({k: v for k, v in info.items() if k != "columns"}, fmt)


@app.command()
def maintain(
    table: Annotated[str | None, typer.Argument(help="One table; all if left out.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say what would be done, change nothing.")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Compact small files, apply retention, expire old snapshots, remove unreferenced files.

    The worker does this in the background (lake.maintenance); this runs it now. It is safe
    while `up` runs: its commits never conflict with the pipeline's.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from sensorlake.lake.catalog import open_catalog
    from sensorlake.lake.maintenance import Maintenance

    cfg = _load(config, data_dir)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err, transient=True, disable=fmt is not Format.table) as progress:
        task = progress.add_task("maintenance", total=None)
        maintenance = Maintenance.from_config(
            cfg, open_catalog(cfg), progress=lambda text: progress.update(task, description=text))
        if table is not None:
            from sensorlake.lake.tables import load_table

            load_table(maintenance.catalog, cfg.lake.namespace, table)  # names a missing table
        reports = maintenance.run([table] if table else None, dry_run=dry_run)
    if fmt is Format.json:
        emit_doc({"tables": [asdict(r) for r in reports]}, fmt)
        return
    for report in reports:
        Console().print(report.summary())


@app.command()
def version() -> None:
    """Print the version."""
    Console().print(__version__)


def main() -> None:
    try:
        app()
    except (SensorlakeError, BaseExceptionGroup) as exc:
        found = _ours(exc)
        if found is None:
            raise
        err.print(f"[bold red]error:[/] {found}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def _ours(exc: BaseException) -> SensorlakeError | None:
    """Our error inside task-group wrappers, which the event loop adds around it."""
    if isinstance(exc, SensorlakeError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _ours(inner)
            if found is not None:
                return found
    return None
