"""`sensorlake bench`: a load generator on the simulator, measuring publish → PUBACK latency.

Each connection is a paho-mqtt client with its own network thread; the main thread paces
publishes to the target rate across connections. A PUBACK means the reading is in the stream,
so the latency measured is the one a device sees, durability included.
"""

from __future__ import annotations

import datetime as dt
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson

from sensorlake.errors import SimulateError
from sensorlake.simulate.profiles import Fleet
from sensorlake.simulate.run import Identity, new_client

DRAIN_S = 10.0


@dataclass(frozen=True)
class BenchResult:
    connections: int
    target_rate: float
    seconds: float
    sent: int
    acked: int
    failed: int
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.acked / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))]

    def to_json(self) -> dict[str, Any]:
        return {
            "connections": self.connections, "target_rate": self.target_rate,
            "seconds": round(self.seconds, 3), "sent": self.sent, "acked": self.acked,
            "failed": self.failed, "rate": round(self.rate, 1),
            "latency_ms": {
                "p50": self.percentile(0.5), "p90": self.percentile(0.9),
                "p99": self.percentile(0.99),
                "max": max(self.latencies_ms) if self.latencies_ms else None,
                "mean": statistics.fmean(self.latencies_ms) if self.latencies_ms else None,
            },
        }


class _Connection:
    def __init__(self, host: str, port: int, identity: Identity | None) -> None:
        self.lock = threading.Lock()
        self.sent_at: dict[int, float] = {}
        self.early: dict[int, float] = {}
        """PUBACKs that arrived before publish() returned its message id."""
        self.latencies: list[float] = []
        self.client = new_client("bench", identity.bundle if identity else None)
        self.client.on_publish = self._on_publish
        try:
            self.client.connect(host, port)
        except OSError as exc:
            raise SimulateError(f"cannot connect to MQTT at {host}:{port}: {exc}",
                                hint="is `sensorlake up` running? --host/--mqtt-port pick "
                                "another target") from exc
        self.client.loop_start()

    def _on_publish(self, _c: object, _u: object, mid: int, _rc: object, _p: object) -> None:
        now = time.perf_counter()
        with self.lock:
            sent = self.sent_at.pop(mid, None)
            if sent is None:
                self.early[mid] = now
            else:
                self.latencies.append((now - sent) * 1000)

    def publish(self, topic: str, payload: bytes) -> None:
        # Not under self.lock: paho may call on_publish while holding its own lock.
        started = time.perf_counter()
        info = self.client.publish(topic, payload, qos=1)
        with self.lock:
            acked = self.early.pop(info.mid, None)
            if acked is None:
                self.sent_at[info.mid] = started
            else:
                self.latencies.append((acked - started) * 1000)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def bench(host: str, port: int, *, connections: int, rate: float, duration: float,
          profile: str = "smartfarm", seed: int = 0,
          identities: list[Identity] | None = None) -> BenchResult:
    if not 1 <= connections <= 1000:
        raise SimulateError(f"connections must be 1 to 1000, not {connections}")
    if not 0 < rate <= 1_000_000 or not 0 < duration <= 3600:
        raise SimulateError("rate must be in (0, 1000000] and duration in (0, 3600] s")
    fleet = Fleet(profile, connections, seed=seed, anomaly_rate=0.0)
    conns = [_Connection(host, port, identities[i % len(identities)] if identities else None)
             for i in range(connections)]
    topics = [fleet.topic(i) for i in range(connections)]
    if identities:
        topics = [f"{t.split('/')[0]}/{identities[i % len(identities)].name}/"
                  f"{'/'.join(t.split('/')[2:])}" for i, t in enumerate(topics)]
    sent = 0
    started = time.perf_counter()
    now_wall = dt.datetime.now(dt.UTC)
    try:
        while (elapsed := time.perf_counter() - started) < duration:
            due = int(elapsed * rate) - sent
            for _ in range(max(0, due)):
                i = sent % connections
                reading = fleet.reading(i, sent // connections, now_wall) or {"dropout": True}
                conns[i].publish(topics[i], orjson.dumps(reading))
                sent += 1
            time.sleep(0.002)
        deadline = time.perf_counter() + DRAIN_S
        while any(c.sent_at for c in conns) and time.perf_counter() < deadline:
            time.sleep(0.01)
        finished = time.perf_counter()
    finally:
        for conn in conns:
            conn.close()
    latencies = [x for c in conns for x in c.latencies]
    return BenchResult(connections, rate, finished - started, sent, len(latencies),
                       sent - len(latencies), latencies)
