"""In-memory DuckDB databases that read no file and load or install no extension: for SQL over
Arrow tables handed to them (rules, device state summaries, parsing), never over the disk."""

from __future__ import annotations

import duckdb


def sealed_duckdb(threads: int | None = 1) -> duckdb.DuckDBPyConnection:
    config: dict[str, str | bool | int | float | list[str]] = {
        "enable_external_access": "false", "autoload_known_extensions": "false",
        "autoinstall_known_extensions": "false"}
    if threads is not None:
        config["threads"] = str(threads)
    return duckdb.connect(":memory:", config=config)
