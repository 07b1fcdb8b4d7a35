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


class ReloadRefused(SensorlakeError):
    """The running `up` kept its configuration: the new one did not load or changed more than
    a reload applies."""


class StreamError(SensorlakeError):
    """The stream (NATS JetStream) could not be reached or refused an operation."""

    transient = True
    status = 503


class StorageFull(StreamError):
    """The stream cannot store more data: its disk is full. The message says which disk and
    how full; nothing that was acknowledged before is lost."""

    status = 507


class ServerStartError(SensorlakeError):
    """The embedded nats-server could not be started."""


class IngestError(SensorlakeError):
    """An ingest request cannot be accepted as sent."""

    status = 400


class PayloadTooLarge(IngestError):
    status = 413


class UnsupportedMediaType(IngestError):
    status = 415


class SimulateError(SensorlakeError):
    """`sensorlake simulate` cannot run as asked: an argument no profile can honour, or a target
    it cannot reach; the message names which."""

    status = 400


class SimulationNotFound(SimulateError):
    status = 404


class QueryError(SensorlakeError):
    """A query was refused by the read-only guard or failed in the engine."""

    status = 400


class TableNotFound(QueryError):
    status = 404


class LakeError(SensorlakeError):
    """The catalog or warehouse refused a read or a commit.

    503, not 500: the request was fine and the same one succeeds once the catalog is back, which
    is what a client (or a load balancer) should be told.
    """

    transient = True
    status = 503


class DeviceError(SensorlakeError):
    """A device registry operation cannot be done as asked (unknown name, duplicate, revoked)."""

    status = 400


class DeviceNotSeen(DeviceError):
    """No reading of this device is in device state."""

    status = 404


class CertificateError(SensorlakeError):
    """The sensorlake certificate authority or a certificate in the data dir is unusable."""


class AccessError(SensorlakeError):
    """A request carries no usable API key: missing, malformed, unknown or revoked.

    The message never repeats what the client sent, so key material cannot leak into logs or
    responses; at most it names the key's public id.
    """

    status = 401


class AccessDenied(AccessError):
    """The API key is valid but its scope or device binding does not allow this request."""

    status = 403


class RateLimited(AccessError):
    """The API key spent its request budget; `retry_after` is the whole seconds until it may
    send again, for the Retry-After header."""

    transient = True
    status = 429

    def __init__(self, message: str, *, retry_after: int, hint: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, hint=hint)


class ApiKeyError(SensorlakeError):
    """An API key cannot be created or revoked as asked (bad scope/device pair, unknown id)."""

    status = 400


class KeyRegistryError(SensorlakeError):
    """The key registry (registry.db) cannot be read, so no request can be authorised."""

    transient = True
    status = 503


class AgentError(SensorlakeError):
    """`sensorlake agent` cannot run as asked: a source that cannot be read on this device, a
    bundle or queue folder it cannot use; the message names which and how to fix it."""

    status = 400


class RowsRefused(SensorlakeError):
    """Rows an output cannot store for what they hold, not for the state of its destination:
    retrying cannot help, so the pipeline isolates them into dead_letter at once."""

    status = 400


class AlertsError(SensorlakeError):
    """A request about alerts, anomalies or silences that cannot be taken as it is."""

    status = 400


class RollupError(SensorlakeError):
    """The rollup tables cannot be written or rebuilt as asked."""

    status = 503


class ChartError(SensorlakeError):
    """A chart request that cannot be answered as it is (unknown field, bad time range)."""

    status = 400


class SavedQueryError(SensorlakeError):
    """A saved query that cannot be stored or found as named."""

    status = 400


class SavedQueryNotFound(SavedQueryError):
    status = 404
