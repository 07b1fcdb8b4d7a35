"""One exception family, so the CLI and the API can turn any of them into a message and a status.

Each error says whether retrying can help (`transient`) and carries a `hint` that tells the user
what to do; the message alone must be enough to act on.
"""

from __future__ import annotations


class SensorlakeError(Exception):
    """Base of every error sensorlake raises on purpose."""

    transient: bool = False
    status: int = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(f"{message} — {hint}" if hint else message)


class ConfigError(SensorlakeError):
    """A setting is missing, unknown or invalid; `key` names it as written in sensorlake.toml."""

    status = 400

    def __init__(self, key: str, message: str, *, hint: str | None = None) -> None:
        self.key = key
        super().__init__(f"config key '{key}': {message}", hint=hint)


class StreamError(SensorlakeError):
    """The stream (NATS JetStream) could not be reached or refused an operation."""

    transient = True
    status = 503


class ServerStartError(SensorlakeError):
    """The embedded nats-server could not be started."""


class IngestError(SensorlakeError):
    """An ingest request cannot be accepted as sent."""

    status = 400


class PayloadTooLarge(IngestError):
    status = 413


class UnsupportedMediaType(IngestError):
    status = 415


class QueryError(SensorlakeError):
    """A query was refused by the read-only guard or failed in the engine."""

    status = 400


class TableNotFound(QueryError):
    status = 404


class LakeError(SensorlakeError):
    """The catalog or warehouse refused a read or a commit."""

    transient = True
