"""Values as JSON can carry them — one conversion for query results over HTTP and every CLI
output format, importable without the query engine (the CLI starts faster for it)."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Sequence
from datetime import date, datetime
from datetime import time as dtime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson


def jsonable(value: Any) -> Any:
    """DuckDB's Python values as JSON: times ISO 8601, bytes as text where they are text."""
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def cell(value: Any) -> str:
    """A value as one CSV or table cell: nested values as JSON, None as nothing."""
    value = jsonable(value)
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def csv_text(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """What `sensorlake query --format csv` prints and the dashboard downloads."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[cell(v) for v in r] for r in rows])
    return buf.getvalue()
