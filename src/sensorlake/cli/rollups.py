"""`sensorlake rollups`: the 1-minute and 1-hour rollup tables."""

from __future__ import annotations

import typer
from rich.console import Console

from sensorlake.cli.common import ConfigOpt, DataDirOpt, FormatOpt, load
from sensorlake.cli.output import Format, emit_rows

app = typer.Typer(name="rollups", help="The telemetry_1m and telemetry_1h rollup tables.",
                  no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)


@app.command("rebuild")
def rebuild_tables(config: ConfigOpt = None, data_dir: DataDirOpt = None,
                   fmt: FormatOpt = Format.table) -> None:
    """Compute the rollup tables again from all of telemetry (with sensorlake stopped)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from sensorlake.rollup.rebuild import rebuild

    cfg = load(config, data_dir)
    columns = [TextColumn("reading telemetry"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn()]
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("rebuild", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total or None)

        rebuilt = rebuild(cfg, advance)
    emit_rows(["table", "readings", "rows", "open buckets"],
              [[r.table, r.readings, r.rows, r.open] for r in rebuilt], fmt)
