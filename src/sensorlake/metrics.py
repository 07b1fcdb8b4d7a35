"""Prometheus metrics of one sensorlake process, in a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class _Registry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class ApiMetrics(_Registry):
    """Counted by the HTTP API process."""

    def __init__(self) -> None:
        super().__init__()
        self.ingested = Counter(
            "sensorlake_readings_ingested",
            "Readings accepted by the HTTP ingest API and acknowledged by the stream.",
            registry=self.registry,
        )
        self.rejected = Counter(
            "sensorlake_readings_rejected",
            "Readings refused by the HTTP ingest API (reported back to the sender).",
            registry=self.registry,
        )
        self.worker_restarts = Counter(
            "sensorlake_worker_restarts",
            "Workers `up` killed and restarted because they made no progress, by reason "
            "(unresponsive: no status answer; stalled: uncommitted readings, no commit).",
            ["reason"], registry=self.registry,
        )
        for reason in ("unresponsive", "stalled"):
            self.worker_restarts.labels(reason)


class WriterMetrics(_Registry):
    """Counted by the pipeline worker (`sensorlake worker`), served through the API's /metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.received = Counter(
            "sensorlake_readings_received",
            "Readings the worker decoded from the stream (MQTT and HTTP).",
            registry=self.registry,
        )
        self.committed = Counter(
            "sensorlake_rows_committed",
            "Rows committed, per output (telemetry: readings; dead_letter: dead letters).",
            ["output"], registry=self.registry,
        )
        self.rejected = Counter(
            "sensorlake_rows_rejected",
            "Rows an output could not store (a terminal error), isolated into dead_letter.",
            registry=self.registry,
        )
        self.commits = Counter(
            "sensorlake_commits", "Commit cycles that stored rows.",
            registry=self.registry,
        )
        self.last_commit = Gauge(
            "sensorlake_last_commit_timestamp_seconds",
            "When the worker last committed a cycle that stored rows (Unix time).",
            registry=self.registry,
        )
        self.commit_failures = Counter(
            "sensorlake_commit_failures",
            "Failed writes of an output, by kind: transient (retried) or terminal (isolated).",
            ["kind"], registry=self.registry,
        )
        self.session_restarts = Counter(
            "sensorlake_session_restarts",
            "Times the worker started over from the lake's position after a stream error.",
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "sensorlake_consumer_lag_messages",
            "Stream messages the worker has not yet committed.",
            registry=self.registry,
        )
        self.buffered = Gauge(
            "sensorlake_writer_buffered_readings",
            "Readings read and not yet committed (queries see them from the stream).",
            registry=self.registry,
        )
        self.flush_duration = Histogram(
            "sensorlake_flush_duration_seconds",
            "Time to build, write and commit one commit cycle, every output included.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.table_files = Gauge(
            "sensorlake_table_data_files", "Data files in the current snapshot, per table.",
            ["table"], registry=self.registry,
        )
        self.table_bytes = Gauge(
            "sensorlake_table_data_bytes", "Bytes of data files in the current snapshot.",
            ["table"], registry=self.registry,
        )
        self.table_snapshots = Gauge(
            "sensorlake_table_snapshots", "Snapshots the table's metadata keeps.",
            ["table"], registry=self.registry,
        )
        self.table_metadata_bytes = Gauge(
            "sensorlake_table_metadata_bytes",
            "Size of the table's current metadata file (rewritten by every commit).",
            ["table"], registry=self.registry,
        )
        self.maintenance_runs = Counter(
            "sensorlake_maintenance_runs", "Background maintenance runs, by outcome (ok, failed).",
            ["outcome"], registry=self.registry,
        )
        self.maintenance_last = Gauge(
            "sensorlake_maintenance_last_run_timestamp_seconds",
            "When maintenance last finished a table (Unix time).",
            ["table"], registry=self.registry,
        )
        self.compacted_files = Counter(
            "sensorlake_compacted_files", "Small files compaction rewrote, per table.",
            ["table"], registry=self.registry,
        )
        self.removed_files = Counter(
            "sensorlake_orphan_files_removed", "Unreferenced files deleted, per table.",
            ["table"], registry=self.registry,
        )
