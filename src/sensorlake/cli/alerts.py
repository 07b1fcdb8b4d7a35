"""`sensorlake alerts`: try a channel, list what is firing and pending, silence a device."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console

from sensorlake.cli.common import ConfigOpt, DataDirOpt, FormatOpt, load
from sensorlake.cli.output import Format, emit_rows
from sensorlake.errors import SensorlakeError

app = typer.Typer(name="alerts", help="Alert channels, firing and pending alerts, silences.",
                  no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)


@app.command("test")
def try_channel(
    channel: Annotated[str, typer.Argument(help="The [[alerts.channels]] name.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Send a test message to a channel now, and say what it answered."""
    import asyncio

    from sensorlake.alerts.channels import ChannelClient, Outcome
    from sensorlake.alerts.notify import iso
    from sensorlake.alerts.setup import dashboard_url
    from sensorlake.alerts.store import AlertStore

    cfg = load(config, data_dir)
    found = {c.name: c for c in cfg.alerts.channels}
    if channel not in found:
        raise SensorlakeError(f"no alert channel is named {channel!r}",
                              hint=f"channels: {', '.join(found) or 'none'} "
                                   "([[alerts.channels]] in sensorlake.toml)")
    client = ChannelClient(found[channel])
    body = {"status": "test", "channel": channel, "group_key": f"{channel}:test",
            "group_labels": {}, "alerts": [], "readings": 0, "devices": 0,
            "dashboard": dashboard_url(cfg), "created_at": iso(time.time())}

    async def send() -> Outcome:
        try:
            return await client.send(body)
        finally:
            await client.close()

    started = time.perf_counter()
    outcome = asyncio.run(send())
    latency = (time.perf_counter() - started) * 1000
    status = "sent" if outcome.ok else ("rate_limited" if outcome.code == 429 else "failed")
    AlertStore.for_config(cfg).log_attempt(channel, f"{channel}:test", "test", status,
                                           round(latency, 3), outcome.code, outcome.error)
    if not outcome.ok:
        raise SensorlakeError(f"{client.shown_url} did not take the test message: "
                              f"{outcome.error}",
                              hint="check the channel's url (a webhook URL of the channel)")
    Console().print(f"sent a test message to {channel} ({client.shown_url}): HTTP "
                    f"{outcome.code} in {latency:.0f} ms")


@app.command("list")
def list_alerts(config: ConfigOpt = None, data_dir: DataDirOpt = None,
                fmt: FormatOpt = Format.table) -> None:
    """Firing and pending alerts, as the running pipeline last saw them."""
    from sensorlake.alerts.notify import iso
    from sensorlake.alerts.store import AlertStore

    cfg = load(config, data_dir)
    store = AlertStore.for_config(cfg)
    shown, at = store.shown()
    columns = ["status", "detector", "device", "field", "value", "expected", "readings",
               "since", "channel", "silenced"]
    rows = [[a["status"], a["detector"], a["device"], a["field"],
             a["value_text"] if a.get("value_text") is not None else a.get("value"),
             a["expected"], a["readings"], a["since"], a["channel"] or "",
             "yes" if a.get("silenced") else ""] for a in shown]
    emit_rows(columns, rows, fmt, extra={"as_of": iso(at)})
    if fmt is Format.table:
        silences = store.silences()
        for device, silence in silences.items():
            err.print(f"[dim]{device} is silenced until {iso(silence['until'])}[/]")
        age = f", as of {time.time() - at:.0f} s ago" if at is not None else ""
        err.print(f"[dim]{len(rows)} alerts firing or pending{age}[/]")


@app.command("silence")
def silence_device(
    device: Annotated[str, typer.Argument(help="The device whose alerts go quiet.")],
    for_: Annotated[str, typer.Option("--for", help="How long: 90s, 30m, 2h, 1d.")] = "2h",
    comment: Annotated[str, typer.Option(help="Why, for whoever looks next.")] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Send no notification for a device's alerts for a while (they are still listed)."""
    from sensorlake.alerts.notify import iso
    from sensorlake.alerts.silence import parse_duration, silence
    from sensorlake.alerts.store import AlertStore

    cfg = load(config, data_dir)
    until = silence(AlertStore.for_config(cfg), device, parse_duration(for_), comment)
    Console().print(f"{device} is silenced until {iso(until)}")


@app.command("unsilence")
def unsilence_device(
    device: Annotated[str, typer.Argument(help="The device to notify about again.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """End a device's silence now."""
    from sensorlake.alerts.store import AlertStore

    cfg = load(config, data_dir)
    AlertStore.for_config(cfg).silence(device, 0.0)
    Console().print(f"{device} is no longer silenced")
