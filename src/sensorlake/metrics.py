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


class WriterMetrics(_Registry):
    """Counted by the lake writer (`sensorlake worker`), served through the API's /metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.received = Counter(
            "sensorlake_readings_received",
            "Readings the lake writer read from the stream (MQTT and HTTP).",
            registry=self.registry,
        )
        self.committed = Counter(
            "sensorlake_readings_committed",
            "Readings committed to the telemetry table.",
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "sensorlake_readings_dead_lettered",
            "Records committed to the dead_letter table.",
            registry=self.registry,
        )
        self.commits = Counter(
            "sensorlake_commits", "Iceberg snapshots committed by the writer.",
            registry=self.registry,
        )
        self.commit_failures = Counter(
            "sensorlake_commit_failures", "Commits that failed and were retried.",
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "sensorlake_consumer_lag_messages",
            "Stream messages the lake writer has not yet committed.",
            registry=self.registry,
        )
        self.buffered = Gauge(
            "sensorlake_writer_buffered_readings",
            "Readings in the writer's buffer, visible to queries but not yet committed.",
            registry=self.registry,
        )
        self.flush_duration = Histogram(
            "sensorlake_flush_duration_seconds",
            "Time to build, write and commit one flush.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
