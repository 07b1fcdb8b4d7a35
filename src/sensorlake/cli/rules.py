"""`sensorlake rules`: check the `[[rules]]` of a config without starting, and try one rule on a
payload."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from sensorlake.cli.common import ConfigOpt, DataDirOpt, FormatOpt, load
from sensorlake.cli.output import Format, emit_rows

app = typer.Typer(name="rules", help="Check rules, and see what one emits for a payload.",
                  no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)


@app.command()
def check(config: ConfigOpt = None, data_dir: DataDirOpt = None,
          fmt: FormatOpt = Format.table) -> None:
    """Load the config and check every rule's SQL and actions, as `up` does on start."""
    cfg = load(config, data_dir)  # a bad rule stops here, with its name and the place
    from sensorlake.rules.dialect import translate

    rows = [[rule.name, "yes" if rule.enabled else "no", translate(rule.name, rule.sql)
             .topic_filter, ", ".join(rule.actions)] for rule in cfg.rules]
    emit_rows(["rule", "enabled", "from", "actions"], rows, fmt)
    if fmt is Format.table:
        err.print(f"[dim]{len(rows)} rules, all valid[/]")


@app.command("test")
def try_one(
    name: Annotated[str, typer.Argument(help="The rule's name.")],
    payload: Annotated[str, typer.Option(help="A message as a device sends it (JSON).")],
    topic: Annotated[str, typer.Option(help="The MQTT topic it arrives on.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Print the rows the rule would emit for one message, decoded as the pipeline decodes it."""
    from sensorlake.rules.trial import find_rule, try_rule

    cfg = load(config, data_dir)
    rows, dead = try_rule(cfg, find_rule(cfg, name), payload.encode(), topic)
    for reason in dead.column("reason").to_pylist() if dead.num_rows else []:
        err.print(f"[yellow]not a reading:[/] {reason}")
    emit_rows(rows.column_names, [list(r.values()) for r in rows.to_pylist()], fmt)
    if fmt is Format.table:
        err.print(f"[dim]{rows.num_rows} rows[/]")

