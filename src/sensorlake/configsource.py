"""Where settings come from, before they are validated: the TOML file, the environment and the
command line, merged in rising precedence.

It is kept apart from the typed model in `config` (pydantic) so that a command which needs only
the data folder, such as `sensorlake query` asking a running `up`, can find it in a few
milliseconds instead of building every model first.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sensorlake.errors import ConfigError

DEFAULT_CONFIG_FILE = "sensorlake.toml"
DEFAULT_DATA_DIR = "./sensorlake-data"
ENV_PREFIX = "SENSORLAKE_"


def raw_settings(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """File, then environment, then `overrides` (None values ignored), unvalidated;
    `path=None` reads ./sensorlake.toml only if it exists."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is None and environ.get("SENSORLAKE_CONFIG"):
        path = Path(environ["SENSORLAKE_CONFIG"])
    if path is not None and not path.exists():
        raise ConfigError(
            "--config", f"file {path} does not exist", hint="run `sensorlake init` to write one"
        )
    candidate = path or Path(DEFAULT_CONFIG_FILE)
    if candidate.exists():
        try:
            data = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                str(candidate), f"is not valid TOML: {exc}", hint="fix the syntax at that line"
            ) from exc
        # A relative data_dir in a config file is relative to that file, not to the cwd.
        if "data_dir" in data and not Path(str(data["data_dir"])).is_absolute():
            data["data_dir"] = str(candidate.parent / str(data["data_dir"]))
    data = merge(data, _from_env(environ))
    return merge(data, {k: v for k, v in (overrides or {}).items() if v is not None})


def data_dir_of(raw: Mapping[str, Any]) -> Path:
    """The data folder the validated config would have."""
    return absolute_dir(Path(str(raw.get("data_dir") or DEFAULT_DATA_DIR)))


def absolute_dir(path: Path) -> Path:
    return path.expanduser().resolve()


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) == 1 and parts[0] != "data_dir":
            continue  # SENSORLAKE_CONFIG and friends are not settings
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out
