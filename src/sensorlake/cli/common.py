"""Options and config loading shared by every command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from sensorlake.cli.output import Format

if TYPE_CHECKING:
    from sensorlake.config import Config

err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="sensorlake.toml to read (default ./sensorlake.toml)."),
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", "-d", help="Data folder (default ./sensorlake-data).")
]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]


def load(config: Path | None, data_dir: Path | None, **server: Any) -> Config:
    from sensorlake.config import load_config
    from sensorlake.logs import configure_logging

    overrides: dict[str, Any] = {"data_dir": data_dir}
    server = {k: v for k, v in server.items() if v is not None}
    if server:
        overrides["server"] = server
    cfg = load_config(config, overrides)
    configure_logging(cfg.log.level, cfg.log.json_format)
    return cfg
