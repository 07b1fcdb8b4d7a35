"""The Iceberg catalog: SQLite in the data dir by default, any pyiceberg catalog by config."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pyiceberg.catalog import Catalog, load_catalog

from sensorlake.config import Config
from sensorlake.errors import ConfigError

_EXTRAS = {"postgresql": "postgres", "psycopg": "postgres", "s3fs": "s3", "boto3": "s3"}


def catalog_properties(config: Config) -> dict[str, str]:
    props = dict(config.lake.catalog)
    if not props:
        props = {"type": "sql", "uri": f"sqlite:///{config.data_dir / 'catalog.db'}"}
    props.setdefault("warehouse", config.warehouse)
    return props


def open_catalog(config: Config) -> Catalog:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    if not config.lake.warehouse:
        (config.data_dir / "warehouse").mkdir(exist_ok=True)
    props = catalog_properties(config)
    name = props.pop("name", "sensorlake")
    try:
        return load_catalog(name, **props)
    except ImportError as exc:
        missing = str(getattr(exc, "name", "") or exc)
        extra = next((e for key, e in _EXTRAS.items() if key in missing.lower()), None)
        hint = f"pip install 'sensorlake[{extra}]'" if extra else "install the missing package"
        raise ConfigError(
            "lake.catalog", f"needs a package that is missing: {exc}", hint=hint
        ) from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            "lake.catalog", str(exc),
            hint="see docs/configuration.md for catalog examples (sql, rest, glue)",
        ) from exc


def mask_uri(uri: str) -> str:
    """`uri` with the password of its user info replaced by ***, so it can be shown and logged."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        return "(an unparsable uri)"
    if password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
