"""One output layer for every command: `--format table|csv|json`."""

from __future__ import annotations

import enum
import sys
from collections.abc import Collection, Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from sensorlake.values import cell, csv_text, jsonable


class Format(enum.StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def emit_rows(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: Format,
    extra: dict[str, Any] | None = None, console: Console | None = None,
    whole: Collection[str] = (),
) -> None:
    """`whole` names table columns never wrapped, such as ids a user copies into a command."""
    if fmt is Format.json:
        doc = {"columns": list(columns), "rows": [[jsonable(v) for v in r] for r in rows]}
        sys.stdout.write(orjson.dumps({**doc, **(extra or {})}).decode() + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(csv_text(columns, rows))
    else:
        table = Table(show_lines=False, header_style="bold")
        for column in columns:
            table.add_column(column, no_wrap=column in whole)
        for row in rows:
            table.add_row(*(cell(v) for v in row))
        (console or Console()).print(table)


def emit_doc(doc: dict[str, Any], fmt: Format, console: Console | None = None) -> None:
    if fmt is Format.json:
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        return
    rows = [(k, v) for k, v in doc.items() if not isinstance(v, list)]
    emit_rows(["key", "value"], rows, fmt, console=console)
