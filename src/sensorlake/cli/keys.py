"""`sensorlake keys`: API keys for the HTTP API.

They are written straight into the data dir's registry.db, not through the running server, so
they work whether or not `up` runs and need no key to make the first key; `up` notices changes
within a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sensorlake.access.keys import ApiKey, KeyStore, Scope
from sensorlake.cli.common import ConfigOpt, DataDirOpt, FormatOpt, load
from sensorlake.cli.output import Format, emit_doc, emit_rows

app = typer.Typer(
    name="keys",
    help="Create, list and revoke the API keys of the HTTP API.",
    no_args_is_help=True,
)
err = Console(stderr=True, soft_wrap=True)  # commands in messages must stay copy-pasteable


def _store(config: Path | None, data_dir: Path | None) -> KeyStore:
    return KeyStore(load(config, data_dir).data_dir)


def _doc(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "scope": str(key.scope),
        "device": key.device,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
        "status": "active" if key.active else "revoked",
    }


def _short(when: str | None) -> str | None:
    return when[:16].replace("T", " ") if when else when


@app.command()
def create(
    scope: Annotated[Scope, typer.Option(
        help="ingest: POST /api/v1/ingest only; read: queries, tables, metrics; admin: all.")],
    device: Annotated[str | None, typer.Option(
        help="Bind an ingest key to one device: it may then write only as that device.")] = None,
    name: Annotated[str, typer.Option(help="A label to recognise the key by later.")] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Create a key and print it. It is stored hashed: this is the only time it is shown."""
    key, plain = _store(config, data_dir).create(scope, device=device, name=name)
    if fmt is not Format.table:
        emit_doc({**_doc(key), "key": plain}, fmt)
        return
    # The key alone on stdout, so `KEY=$(sensorlake keys create …)` captures just it.
    bound = f", device {key.device}" if key.device else ""
    err.print(f"created API key [bold]{key.id}[/] (scope {key.scope}{bound}). It is shown "
              "once and cannot be shown again: store it now.")
    typer.echo(plain)
    err.print("Send it as `Authorization: Bearer <key>`; `sensorlake keys revoke "
              f"{key.id}` withdraws it.", markup=False)


@app.command("list")
def list_keys(config: ConfigOpt = None, data_dir: DataDirOpt = None,
              fmt: FormatOpt = Format.table) -> None:
    """List the keys (ids, scopes, devices, last use; never the keys themselves)."""
    keys = _store(config, data_dir).keys()
    columns = ["id", "name", "scope", "device", "created_at", "last_used_at", "status"]
    rows = [[_doc(key)[c] for c in columns] for key in keys]
    if fmt is Format.table:  # minutes in UTC are enough to read, and fit a terminal
        rows = [[_short(v) if c.endswith("_at") else v for c, v in zip(columns, row, strict=True)]
                for row in rows]
    emit_rows(columns, rows, fmt, whole=["id"])
    if fmt is Format.table and not keys:
        err.print("no API keys yet; `sensorlake keys create --scope read` makes one",
                  markup=False)


@app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id from `keys list`.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a key; a running `up` refuses it within a second."""
    store = _store(config, data_dir)
    was_active = store.get(key_id).active
    key = store.revoke(key_id)
    if was_active:
        Console().print(f"revoked API key {key.id} ({key.scope})")
    else:
        Console().print(f"API key {key.id} was already revoked at {key.revoked_at}")
