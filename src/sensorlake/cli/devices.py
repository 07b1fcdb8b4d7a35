"""`sensorlake devices …`: register, list, show, revoke and rotate devices, and make gateways."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import Progress

from sensorlake.cli.common import ConfigOpt, DataDirOpt, FormatOpt, load
from sensorlake.cli.output import Format, emit_doc, emit_rows
from sensorlake.errors import DeviceError

if TYPE_CHECKING:
    from sensorlake.config import Config
    from sensorlake.devices.ca import IssuedCertificate
    from sensorlake.devices.registry import Device, Registry

app = typer.Typer(help="Devices: register them (certificate + bundle), list, revoke, rotate, make "
                       "gateways.",
                  no_args_is_help=True)
out = Console(soft_wrap=True)


def _attributes(pairs: list[str]) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DeviceError(f"--attr {pair!r} is not KEY=VALUE", hint="e.g. --attr type=dht22")
        attrs[key] = value
    return attrs


def _from_csv(path: Path) -> dict[str, dict[str, str]]:
    """name column (required) plus any other columns as attributes."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "name" not in reader.fieldnames:
                raise DeviceError(f"{path} has no 'name' column",
                                  hint="first line: name,type,location (any attribute columns)")
            return {
                row["name"].strip(): {k: v for k, v in row.items() if k != "name" and v}
                for row in reader if row.get("name", "").strip()
            }
    except OSError as exc:
        raise DeviceError(f"cannot read {path}: {exc}") from exc


def _registry(cfg: Config) -> Registry:
    """Imported when a command needs it: certificates bring in a large library."""
    from sensorlake.devices.registry import Registry

    return Registry(cfg.data_dir)


def _write_bundles(cfg: Config, issued: list[tuple[Device, IssuedCertificate]],
                   out_dir: Path | None) -> list[Path]:
    from sensorlake.devices.bundle import write_bundle

    ca_pem = _registry(cfg).ca.cert_pem
    return [
        write_bundle(cfg, device.name, cert, ca_pem,
                     out_dir / device.name if out_dir else None)
        for device, cert in issued
    ]


@app.command()
def register(
    names: Annotated[list[str] | None, typer.Argument(help="Device names.")] = None,
    count: Annotated[int | None, typer.Option(help="Register N devices named PREFIX-001…")] = None,
    prefix: Annotated[str, typer.Option(help="Name prefix with --count.")] = "device",
    csv_file: Annotated[Path | None, typer.Option("--csv", help="CSV with a name column; "
                                                  "other columns become attributes.")] = None,
    attr: Annotated[list[str] | None, typer.Option(help="KEY=VALUE attribute for every device "
                                                   "registered (repeatable).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write bundles here instead of "
                                                 "<data-dir>/bundles.")] = None,
    gateway: Annotated[bool, typer.Option(
        "--gateway", help="Register them as gateways: their readings may name other "
        "devices.")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Register devices: each gets a key, a certificate from the sensorlake CA, and a bundle."""
    cfg = load(config, data_dir)
    common = _attributes(attr or [])
    wanted: dict[str, dict[str, str]] = {}
    for name in names or []:
        wanted[name] = {}
    if count is not None:
        if count < 1 or count > 100_000:
            raise DeviceError(f"--count {count} is out of range", hint="use 1 to 100000")
        width = max(3, len(str(count)))
        for i in range(1, count + 1):
            wanted[f"{prefix}-{i:0{width}d}"] = {}
    if csv_file is not None:
        wanted.update(_from_csv(csv_file))
    if not wanted:
        raise DeviceError("no device to register",
                          hint="name them (`devices register gh-01 gh-02`), or use --count/--csv")
    attributes = {name: {**common, **attrs} for name, attrs in wanted.items()}
    registry = _registry(cfg)
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("issuing certificates", total=len(wanted))
        issued = registry.register(list(wanted), attributes, gateway=gateway)
        progress.update(task, completed=len(wanted) // 2, description="writing bundles")
        folders = _write_bundles(cfg, issued, out_dir)
        progress.update(task, completed=len(wanted))
    for (device, _), folder in zip(issued, folders, strict=True):
        role = " (gateway)" if device.gateway else ""
        out.print(f"registered [bold]{device.name}[/]{role}  bundle: {folder}")
    if len(issued) == 1:
        out.print(f"  try: sh {folders[0] / 'publish.sh'}")
    out.print(f"[dim]MQTT now needs TLS with a client certificate on port "
              f"{cfg.server.mqtts_port}; a running `up` applies this within a second.[/]")


@app.command("list")
def list_(config: ConfigOpt = None, data_dir: DataDirOpt = None,
          fmt: FormatOpt = Format.table) -> None:
    """Registered devices, and any that published, with when they were last seen."""
    import asyncio

    from sensorlake.devices.listing import COLUMNS, device_rows
    from sensorlake.query.engine import QueryEngine
    from sensorlake.query.fresh import stream_tail

    cfg = load(config, data_dir)
    engine = QueryEngine(cfg)
    tail = asyncio.run(stream_tail(cfg, engine))
    emit_rows(COLUMNS, device_rows(cfg, engine, tail.table), fmt)


STATE_COLUMNS = ["device", "online", "last_seen", "last_received", "messages", "values"]


@app.command()
def state(
    name: Annotated[str | None, typer.Argument(help="Device name; all devices without.")] = None,
    config: ConfigOpt = None, data_dir: DataDirOpt = None, fmt: FormatOpt = Format.table,
) -> None:
    """Device state: each device's latest values, last seen, online or offline."""
    import asyncio

    from sensorlake.errors import DeviceNotSeen
    from sensorlake.query.engine import QueryEngine
    from sensorlake.query.fresh import stream_tail
    from sensorlake.state import view

    cfg = load(config, data_dir)
    engine = QueryEngine(cfg)
    tail = asyncio.run(stream_tail(cfg, engine))
    docs = view.devices(view.current(engine.state, tail.table, name), cfg)
    if name is not None:
        if not docs:
            raise DeviceNotSeen(f"device {name!r} has sent no reading since device state began",
                                hint="`sensorlake devices state` lists the devices that did")
        doc = docs[0]
        if fmt is not Format.json:  # one row per value: a long payload stays readable
            doc = {**{k: v for k, v in doc.items() if k not in ("values", "rules")},
                   **{f"values.{k}": v for k, v in doc["values"].items()},
                   **{f"rules.{r}.{k}": v for r, got in doc["rules"].items()
                      for k, v in got["values"].items()}}
        emit_doc(doc, fmt)
        return
    emit_rows(STATE_COLUMNS, [[d["device_id"], d["online"], d.get("last_seen"),
                               d.get("last_received"), d.get("messages"), d["values"]]
                              for d in docs], fmt,
              extra={"offline_after": cfg.devices.offline_after}, whole=("device",))


@app.command()
def show(name: Annotated[str, typer.Argument(help="Device name.")], config: ConfigOpt = None,
         data_dir: DataDirOpt = None, fmt: FormatOpt = Format.table) -> None:
    """One device: status, whether it is a gateway, attributes, certificate, topics it may use."""
    from sensorlake.devices.bundle import bundle_dir

    cfg = load(config, data_dir)
    device = _registry(cfg).get(name)
    emit_doc({
        "name": device.name,
        "status": device.status,
        "gateway": device.gateway,
        "attributes": device.attributes,
        "certificate_serial": device.cert_serial,
        "certificate_expires": device.cert_not_after,
        "may_publish": ", ".join(cfg.devices.publish_filters(name)),
        "may_subscribe": ", ".join(cfg.devices.subscribe_filters(name)),
        "bundle": str(bundle_dir(cfg, name)),
        "registered": device.created_at,
        "updated": device.updated_at,
    }, fmt)


@app.command()
def revoke(name: Annotated[str, typer.Argument(help="Device name.")], config: ConfigOpt = None,
           data_dir: DataDirOpt = None) -> None:
    """Stop a device: its certificate is refused, and a running `up` disconnects it."""
    cfg = load(config, data_dir)
    _registry(cfg).revoke(name)
    out.print(f"revoked {name}; `sensorlake devices rotate {name}` would issue a new certificate")


@app.command()
def rotate(
    name: Annotated[str, typer.Argument(help="Device name.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write the bundle here.")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """A new key and certificate for a device; the old certificate stops working."""
    cfg = load(config, data_dir)
    device, cert = _registry(cfg).rotate(name)
    folder = _write_bundles(cfg, [(device, cert)], out_dir)[0]
    out.print(f"rotated {name}; new bundle: {folder} (copy it to the device)")


@app.command()
def gateway(
    name: Annotated[str, typer.Argument(help="Device name.")],
    off: Annotated[bool, typer.Option("--off", help="Make it a plain device again: it may then "
                                      "write only as itself.")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Let a device write readings for other devices (it relays for them), or stop it.

    A device that is not a gateway may name only itself in a reading; one naming another device
    goes to dead_letter. A running `up` applies the change within a few seconds.
    """
    cfg = load(config, data_dir)
    registry = _registry(cfg)
    was = [d.gateway for d in registry.devices(name)]
    device = registry.set_gateway(name, not off)
    if was == [device.gateway]:
        out.print(f"{name} {'is' if device.gateway else 'is not'} a gateway already")
        return
    within = "a running `up` applies this within a few seconds"
    if device.gateway:
        out.print(f"{name} is now a gateway: its readings may name other devices; {within}")
    else:
        out.print(f"{name} is no longer a gateway: it may write only as itself; {within}")
    if not device.active:
        out.print(f"[dim]{name} is revoked; `sensorlake devices rotate {name}` reinstates it[/]")


@app.command()
def token(
    name: Annotated[str, typer.Argument(help="Device name.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """A username + token for a device that cannot hold a certificate (replaces its old token).

    The device connects with plain MQTT to the usual MQTT port, username = its name, password =
    the token; it may use the same topics as with its certificate.
    """
    from sensorlake.devices.bundle import device_topic
    from sensorlake.devices.ca import write_private
    from sensorlake.devices.tls import public_host
    from sensorlake.devices.token_gate import token_dir

    cfg = load(config, data_dir)
    secret, cert = _registry(cfg).issue_token(name)
    folder = token_dir(cfg, name)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    write_private(folder / "device.key", cert.key_pem)
    (folder / "device.crt").write_bytes(cert.cert_pem)
    out.print(f"token for {name} (shown once; `devices token {name}` again replaces it):")
    out.print(secret)
    out.print(f"  mosquitto_pub -h {public_host(cfg)} -p {cfg.server.mqtt_port} -u {name} "
              f"-P '{secret}' -q 1 -t {device_topic(cfg, name)} -m '{{\"temperature\": 21.5}}'")
